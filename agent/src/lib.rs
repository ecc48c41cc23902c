//! Shoulder device agent: TLS service, consent, audit.
