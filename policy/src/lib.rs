//! Policy model (being written).
