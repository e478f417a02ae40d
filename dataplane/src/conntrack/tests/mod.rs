//! Tests of the connection tracker. Frames are built byte by byte (checksums are not verified by the parser).

mod frames;
mod mem;
mod prop;
mod table;
mod tcp;
mod tracker;
