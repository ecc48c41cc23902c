//! Shoulder wire protocol, invitation format and sans-I/O session state machines.
