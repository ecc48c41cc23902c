//! End-to-end tests across crates, and what they share: the QEMU image
//! driver ([`qemu`]), the agent's config and boot in it ([`agent_vm`]), the
//! expert in process ([`expert`]) with its certificates ([`pki`]), the
//! screens the tests expect ([`screens`]), the network simulator
//! ([`netsim`]) and the real agent and client over it ([`netsim_live`]),
//! a TCP relay that can cut the expert's connection ([`relay`]), the
//! command line of the timed runs ([`run_args`]),
//! temporary directories ([`tempdir`]) and polling with a deadline
//! ([`wait`]).

pub mod agent_vm;
pub mod expert;
pub mod netsim;
pub mod netsim_live;
pub mod pki;
pub mod qemu;
pub mod relay;
pub mod run_args;
pub mod screens;
pub mod tempdir;
pub mod wait;
