//! Screen capture backends and the frame encoder.
