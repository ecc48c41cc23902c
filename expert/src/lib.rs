//! Shoulder expert client (GUI and CLI).
