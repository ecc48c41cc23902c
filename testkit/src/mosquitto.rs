//! A real Mosquitto broker on loopback (Debian's package; `scripts/setup`
//! installs it): TLS with certificates from a test [`Pki`], client
//! certificates required and their CN taken as the user name, the ACL
//! given (normally the shipped `broker/mosquitto/acl`), persistence in a
//! temporary directory. Stopped on drop.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;

/// The ACL shipped for operators.
pub fn shipped_acl() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/mosquitto/acl");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A running broker.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
}

fn binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run scripts/setup (Debian package mosquitto)")
}

impl Mosquitto {
    /// Starts a broker whose certificates come from `pki`'s CA, with `acl`.
    pub fn start(pki: &Pki, acl: &str) -> Self {
        Self::start_with(pki, acl, None)
    }

    /// A site broker bridged to `central` (all of `shoulder/#` both ways),
    /// connecting as `bridge-site` with a certificate of `pki`: the central
    /// broker's ACL must let that name read and write `shoulder/#`.
    pub fn start_bridged(pki: &Pki, acl: &str, central: &Mosquitto) -> Self {
        Self::start_with(pki, acl, Some(central))
    }

    fn start_with(pki: &Pki, acl: &str, central: Option<&Mosquitto>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoulder-mosquitto-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let (crt, key) = pki.loopback_server();
        std::fs::write(d.join("ca.crt"), &pki.ca_pem).unwrap();
        std::fs::write(d.join("server.crt"), crt).unwrap();
        std::fs::write(d.join("server.key"), key).unwrap();
        std::fs::write(d.join("acl"), acl).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = d.join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        // Running as root, Mosquitto would switch to its own user, which
        // cannot read this directory.
        writeln!(
            f,
            "user root\n\
             listener {port} 127.0.0.1\n\
             cafile {d}/ca.crt\n\
             certfile {d}/server.crt\n\
             keyfile {d}/server.key\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             allow_anonymous false\n\
             set_tcp_nodelay true\n\
             acl_file {d}/acl\n\
             persistence true\n\
             persistence_location {d}/\n\
             log_dest file {d}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information",
            d = d.display()
        )
        .unwrap();
        if let Some(c) = central {
            let (crt, key) = pki.client_pem("bridge-site");
            std::fs::write(d.join("bridge.crt"), crt).unwrap();
            std::fs::write(d.join("bridge.key"), key).unwrap();
            writeln!(
                f,
                "connection central\n\
                 address 127.0.0.1:{port}\n\
                 topic shoulder/# both 1\n\
                 bridge_protocol_version mqttv50\n\
                 bridge_cafile {d}/ca.crt\n\
                 bridge_certfile {d}/bridge.crt\n\
                 bridge_keyfile {d}/bridge.key\n\
                 cleansession true\n\
                 restart_timeout 1 5",
                port = c.port,
                d = d.display()
            )
            .unwrap();
        }
        drop(f);
        let mut m = Self {
            child: None,
            port,
            dir,
            conf,
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "mosquitto did not listen on {addr}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA file clients check the broker with.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Stops the broker (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts it again on the same port: every client's link
    /// drops.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Its persistence file (after [`Mosquitto::stop`]).
    pub fn persistence(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("mosquitto.db")).unwrap_or_default()
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
