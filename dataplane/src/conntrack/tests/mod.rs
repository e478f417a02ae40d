//! Tests of the connection tracker. Frames are built with `net`'s emit side.

mod flood;
mod frames;
mod mem;
mod prop;
mod table;
mod tcp;
mod tracker;
