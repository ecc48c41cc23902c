//! Test support, one of each: the agent in process ([`agent`]) with its
//! screens ([`synthetic`]); the expert as a raw protocol peer through the
//! real session machine ([`tls_expert::TlsExpert`]), as the client library
//! on its own runtime ([`expert::ClientExpert`]) or on the test's
//! ([`client_session::Session`]), and as the `shoulder` binary run as a
//! child process ([`client_cli::CliExpert`]); where the workspace's
//! binaries are ([`bins`]),
//! a plant PKI ([`pki`]), a TCP relay that can cut connections
//! ([`relay`]), the QEMU image driver ([`qemu`]) and the agent's config
//! and boot in it ([`agent_vm`]), the screens the image tests expect
//! ([`screens`]), pictures as RGB ([`picture`]), the network simulator
//! ([`netsim`]) and the real agent and client over it ([`netsim_live`]),
//! the command line of the timed runs ([`run_args`]) and polling with a
//! deadline ([`wait`]).

pub mod agent;
pub mod agent_vm;
pub mod bins;
pub mod client_cli;
pub mod client_session;
pub mod expert;
pub mod mosquitto;
pub mod netsim;
pub mod netsim_live;
pub mod picture;
pub mod pki;
pub mod qemu;
pub mod relay;
pub mod run_args;
pub mod screens;
pub mod synthetic;
pub mod tls_expert;
pub mod wait;
pub mod weston_vm;
pub mod xkb;
