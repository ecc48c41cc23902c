//! Boots the QEMU test image (built by `image/build`) and drives it: QMP
//! screendumps, absolute pointer, buttons and keys through
//! `input-send-event`, the serial console log, shell commands in the guest
//! ([`Vm::exec`], through a virtio serial port), hot-unplug of a device
//! ([`Vm::device_del`]), shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! use shoulder_testkit::qemu::{Vm, VmConfig};
//!
//! let Some(image) = shoulder_testkit::qemu::image_or_skip("my_test") else { return };
//! let mut vm = Vm::boot(&image, VmConfig::default().kiosk_args("--mode 1024x768")).unwrap();
//! let screen = vm.screendump().unwrap();
//! vm.click(512, 384, screen.size()).unwrap();
//! vm.wait_serial(0, "kiosk: counter=", Duration::from_secs(5)).unwrap();
//! ```
//!
//! The QEMU command line mirrors `image/run` (keep the two in step). Per-boot
//! files (agent config, keys, `/etc/shoulder/boot.env`, see `image/init`)
//! are appended to the image's initramfs as a second newc archive, so tests
//! need no image rebuild. Every VM gets its own temporary directory (QMP
//! socket, serial log, initramfs) and a free loopback port forwarded to the
//! agent's port 7575; the VM is killed when [`Vm`] is dropped.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Port the agent listens on inside the image.
pub const GUEST_AGENT_PORT: u16 = 7575;
/// Id of the display device; QMP input events name it to reach the
/// virtio keyboard and tablet bound to it.
pub const DISPLAY_ID: &str = "video0";
/// Largest value of QEMU's absolute pointer axes (`INPUT_EVENT_ABS_MAX`).
pub const ABS_MAX: u32 = 0x7fff;
/// The line `image/init` prints once the kiosk app and agent are up.
pub const READY_MARKER: &str = "shoulder-image: READY";
/// Default wait for READY: a boot takes about 2.5 s alone under TCG, much
/// more when several VMs and builds share two cores.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Wait for a QMP reply; screendumps of large screens are the slowest.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest screendump accepted (8K × 8K RGB), a bound on a corrupt header.
const MAX_SCREENDUMP_BYTES: usize = 8192 * 8192 * 3;
/// How often the serial log is re-read while waiting for a line.
const SERIAL_POLL: Duration = Duration::from_millis(20);
/// Longest output of one [`Vm::exec`] kept (a bound on a runaway command).
const MAX_EXEC_OUTPUT: usize = 4 * 1024 * 1024;
/// How often QEMU is asked whether an unplugged device is gone yet.
const DEVICE_DEL_POLL: Duration = Duration::from_millis(50);
/// Attempts to start QEMU when the chosen free port was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

/// Errors of the VM driver, each naming what failed.
#[derive(Debug)]
pub enum VmError {
    /// A file or process operation failed.
    Io { what: String, source: io::Error },
    /// QEMU exited early.
    QemuExited { status: String, stderr: String },
    /// A QMP command returned an error or garbage.
    Qmp { command: String, detail: String },
    /// Waiting for something timed out.
    Timeout { what: String, serial_tail: String },
    /// The screendump file is not a valid binary PPM.
    BadScreendump(String),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::QemuExited { status, stderr } => write!(f, "QEMU exited ({status}): {stderr}"),
            Self::Qmp { command, detail } => write!(f, "QMP {command} failed: {detail}"),
            Self::Timeout { what, serial_tail } => {
                write!(
                    f,
                    "timed out waiting for {what}; serial log ends with:\n{serial_tail}"
                )
            }
            Self::BadScreendump(why) => write!(f, "bad screendump: {why}"),
        }
    }
}

impl std::error::Error for VmError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// The built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Uncompressed kernel (ELF, booted through PVH).
    pub vmlinux: PathBuf,
    /// The initramfs (newc, uncompressed).
    pub initramfs: PathBuf,
}

impl Image {
    /// The image in `dir` (normally `image/out`), if both files are there.
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let image = Self {
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
        };
        (image.vmlinux.is_file() && image.initramfs.is_file()).then_some(image)
    }

    /// Whether the image contains the agent binary (`image/build` notes it).
    pub fn has_agent(&self) -> bool {
        self.initramfs
            .parent()
            .map(|d| d.join("initramfs.agent"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|s| s.trim() == "yes")
    }
}

/// Directory of the built image: `$SHOULDER_IMAGE_DIR`, else `image/out` of
/// this repository.
pub fn image_dir() -> PathBuf {
    std::env::var_os("SHOULDER_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/out"))
}

/// The image, or `None` after printing why `test` is skipped. With
/// `SHOULDER_REQUIRE_IMAGE=1` (CI) a missing image or QEMU is a panic instead.
pub fn image_or_skip(test: &str) -> Option<Image> {
    let dir = image_dir();
    let problem = if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        "qemu-system-x86_64 not found (apt-get install qemu-system-x86)".to_string()
    } else if let Some(image) = Image::in_dir(&dir) {
        return Some(image);
    } else {
        format!("no image in {} (run image/build)", dir.display())
    };
    if std::env::var("SHOULDER_REQUIRE_IMAGE").is_ok_and(|v| v == "1") {
        panic!("{test}: {problem}");
    }
    eprintln!("skipping {test}: {problem}");
    None
}

/// A file added to the guest for one boot.
#[derive(Debug, Clone)]
pub struct GuestFile {
    /// Absolute path in the guest, e.g. `/etc/shoulder/agent.toml`.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
}

/// How to boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Lines of `/etc/shoulder/boot.env` (see `image/init`).
    pub boot_env: Vec<String>,
    /// Extra files for this boot.
    pub files: Vec<GuestFile>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub smp: u32,
    /// How long to wait for [`READY_MARKER`].
    pub ready_timeout: Duration,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Extra kernel command-line arguments.
    pub kernel_args: Vec<String>,
    /// The display adapter.
    pub display: DisplayDevice,
}

/// The guest's display adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DisplayDevice {
    /// `bochs-display`: scans video RAM out directly (QMP screendumps show
    /// what was written), no cursor plane.
    #[default]
    Bochs,
    /// `virtio-gpu-pci` at `width`×`height`: a cursor plane and shmem
    /// buffers the host sees only when flushed (screendumps do not show
    /// what was written into them; compare with what the app drew).
    VirtioGpu { width: u32, height: u32 },
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            boot_env: Vec::new(),
            files: Vec::new(),
            memory_mib: 512,
            smp: 1,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            qemu_args: Vec::new(),
            kernel_args: Vec::new(),
            display: DisplayDevice::Bochs,
        }
    }
}

impl VmConfig {
    /// Extra arguments for the kiosk app (`KIOSK_ARGS`).
    pub fn kiosk_args(mut self, args: &str) -> Self {
        self.boot_env.push(format!("KIOSK_ARGS=\"{args}\""));
        self
    }

    /// Adds a line to `/etc/shoulder/boot.env`.
    pub fn env(mut self, line: &str) -> Self {
        self.boot_env.push(line.to_string());
        self
    }

    /// Adds extra QEMU arguments (e.g. a hot-pluggable device:
    /// `["-device", "virtio-keyboard-pci,id=kbd2,bus=rp1"]`).
    pub fn qemu_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a kernel command-line argument (e.g.
    /// `video=Virtual-1:panel_orientation=left_side_up`).
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        self.kernel_args.push(arg.to_string());
        self
    }

    /// Adds a file to the guest.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(GuestFile {
            path: path.to_string(),
            contents: contents.into(),
            mode,
        });
        self
    }
}

/// A screendump: RGB, 3 bytes per pixel, rows without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl fmt::Debug for Screen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Screen({}x{})", self.width, self.height)
    }
}

impl Screen {
    /// Parses a binary PPM (P6, maxval 255) as QEMU's screendump writes it.
    pub fn from_ppm(data: &[u8]) -> Result<Self, VmError> {
        let bad = |why: &str| VmError::BadScreendump(why.to_string());
        let mut fields = Vec::with_capacity(4);
        let mut pos = 0;
        while fields.len() < 4 {
            // Skip whitespace and comments.
            while pos < data.len() && (data[pos].is_ascii_whitespace() || data[pos] == b'#') {
                if data[pos] == b'#' {
                    while pos < data.len() && data[pos] != b'\n' {
                        pos += 1;
                    }
                } else {
                    pos += 1;
                }
            }
            let start = pos;
            while pos < data.len() && !data[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if start == pos {
                return Err(bad("truncated header"));
            }
            fields
                .push(std::str::from_utf8(&data[start..pos]).map_err(|_| bad("header not ASCII"))?);
        }
        if fields[0] != "P6" {
            return Err(bad("not a binary PPM (P6)"));
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad("header number"));
        let (width, height, maxval) = (num(fields[1])?, num(fields[2])?, num(fields[3])?);
        if maxval != 255 {
            return Err(bad("maxval is not 255"));
        }
        let len = width as usize * height as usize * 3;
        if len > MAX_SCREENDUMP_BYTES {
            return Err(bad("image too large"));
        }
        // Exactly one whitespace byte separates the header from the pixels.
        let body = data.get(pos + 1..).ok_or_else(|| bad("no pixel data"))?;
        if body.len() < len {
            return Err(bad("pixel data truncated"));
        }
        Ok(Self {
            width,
            height,
            rgb: body[..len].to_vec(),
        })
    }

    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixel at (`x`, `y`) as `[r, g, b]`; black outside the screen.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3];
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// A screen from XRGB8888 little-endian pixels (bytes B, G, R, X), rows
    /// of `width * 4` bytes: what the kiosk app draws and what the expert's
    /// framebuffer holds.
    pub fn from_xrgb8888(width: u32, height: u32, xrgb: &[u8]) -> Self {
        Self {
            width,
            height,
            rgb: xrgb
                .chunks_exact(4)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
        }
    }

    /// The screen as XRGB8888 little-endian (bytes B, G, R, 0), rows of
    /// `width * 4` bytes: the wire format and the expert's framebuffer layout.
    pub fn to_xrgb8888(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rgb.len() / 3 * 4);
        for px in self.rgb.chunks_exact(3) {
            out.extend_from_slice(&[px[2], px[1], px[0], 0]);
        }
        out
    }

    /// Whether every pixel is black (nothing on screen).
    pub fn is_black(&self) -> bool {
        self.rgb.iter().all(|&b| b == 0)
    }

    /// How many pixels differ from `other` inside the rectangle
    /// (`x`, `y`, `w`, `h`) (clipped to both screens).
    pub fn diff_in(&self, other: &Screen, x: u32, y: u32, w: u32, h: u32) -> usize {
        let x1 = (x + w).min(self.width).min(other.width);
        let y1 = (y + h).min(self.height).min(other.height);
        let mut n = 0;
        for yy in y..y1 {
            for xx in x..x1 {
                if self.pixel(xx, yy) != other.pixel(xx, yy) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The first pixel (in reading order) that differs from `other`, if
    /// any (within both screens).
    pub fn first_difference(&self, other: &Screen) -> Option<(u32, u32)> {
        let (w, h) = (self.width.min(other.width), self.height.min(other.height));
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .find(|&(x, y)| self.pixel(x, y) != other.pixel(x, y))
    }

    /// Writes the screen as a binary PPM (for test artifacts).
    pub fn write_ppm(&self, path: &Path) -> io::Result<()> {
        let mut data = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        data.extend_from_slice(&self.rgb);
        std::fs::write(path, data)
    }
}

/// A QMP connection.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, VmError> {
        let stream = UnixStream::connect(path)
            .map_err(io_err(format!("connecting to QMP at {}", path.display())))?;
        stream
            .set_read_timeout(Some(QMP_TIMEOUT))
            .map_err(io_err("setting the QMP timeout"))?;
        let writer = stream
            .try_clone()
            .map_err(io_err("cloning the QMP socket"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(VmError::Qmp {
                command: "greeting".into(),
                detail: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self, command: &str) -> Result<Value, VmError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(io_err(format!("reading the QMP reply to {command}")))?;
        if n == 0 {
            return Err(VmError::Qmp {
                command: command.into(),
                detail: "QMP connection closed".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| VmError::Qmp {
            command: command.into(),
            detail: format!("unparsable reply {line:?}: {e}"),
        })
    }

    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(io_err(format!("sending QMP {command}")))?;
        loop {
            let reply = self.read_message(command)?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(VmError::Qmp {
                    command: command.into(),
                    detail: err.to_string(),
                });
            }
            // Anything else is an asynchronous event: skip it.
        }
    }
}

/// What [`Vm::exec`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status of the command.
    pub status: i32,
    /// Its stdout and stderr, interleaved.
    pub output: String,
}

/// A pointer button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left,
    Right,
    Middle,
}

impl Button {
    fn qmp_name(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Middle => "middle",
        }
    }
}

static VM_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running VM, killed on drop.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    qmp: Option<QmpHandle>,
    shell: Option<UnixStream>,
    exec_count: u32,
    dir: PathBuf,
    serial: PathBuf,
    host_port: u16,
    ready_line: String,
    boot_time: Duration,
}

/// `Qmp` behind a Debug impl.
struct QmpHandle(Qmp);

impl fmt::Debug for QmpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Qmp")
    }
}

impl Vm {
    /// Boots `image` with `config` and waits until it prints [`READY_MARKER`].
    pub fn boot(image: &Image, config: VmConfig) -> Result<Self, VmError> {
        let n = VM_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoulder-vm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let initramfs = dir.join("initramfs.cpio");
        write_initramfs(&image.initramfs, &config, &initramfs)?;

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start(image, &config, &dir, &initramfs) {
                Ok(vm) => return Ok(vm),
                Err(VmError::QemuExited { status, stderr })
                    if stderr.contains("hostfwd") || stderr.contains("host forwarding") =>
                {
                    last_err = Some(VmError::QemuExited { status, stderr });
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or(VmError::Timeout {
            what: "a free port".into(),
            serial_tail: String::new(),
        }))
    }

    fn start(
        image: &Image,
        config: &VmConfig,
        dir: &Path,
        initramfs: &Path,
    ) -> Result<Self, VmError> {
        let host_port = free_port()?;
        let qmp_path = dir.join("qmp.sock");
        let serial = dir.join("serial.log");
        let shell_path = dir.join("shell.sock");
        let _ = std::fs::remove_file(&shell_path);
        let _ = std::fs::remove_file(&qmp_path);
        let _ = std::fs::remove_file(&serial);
        let stderr_path = dir.join("qemu.stderr");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(io_err("creating the QEMU stderr file"))?;
        let mut append = String::from(
            "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off tsc=reliable \
             no_timer_check random.trust_cpu=on",
        );
        for arg in &config.kernel_args {
            append.push(' ');
            append.push_str(arg);
        }
        let started = Instant::now();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "q35",
            "-accel",
            "tcg",
        ])
        .args([
            "-smp",
            &config.smp.to_string(),
            "-m",
            &format!("{}M", config.memory_mib),
        ])
        .arg("-kernel")
        .arg(&image.vmlinux)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append, "-rtc", "base=utc"])
        .args([
            "-device",
            &match config.display {
                DisplayDevice::Bochs => format!("bochs-display,id={DISPLAY_ID}"),
                DisplayDevice::VirtioGpu { width, height } => {
                    format!("virtio-gpu-pci,id={DISPLAY_ID},xres={width},yres={height}")
                }
            },
        ])
        .args([
            "-device",
            &format!("virtio-keyboard-pci,display={DISPLAY_ID}"),
        ])
        .args([
            "-device",
            &format!("virtio-tablet-pci,display={DISPLAY_ID}"),
        ])
        .args([
            "-netdev",
            &format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_AGENT_PORT}"
            ),
        ])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=gshell,path={},server=on,wait=off",
            shell_path.display()
        ))
        .args([
            "-device",
            "virtserialport,chardev=gshell,name=org.shoulder.shell",
        ])
        .args(["-display", "none", "-no-reboot"])
        .args(&config.qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        let child = cmd.spawn().map_err(io_err("starting qemu-system-x86_64"))?;
        let mut vm = Self {
            child,
            qmp: None,
            shell: None,
            exec_count: 0,
            dir: dir.to_path_buf(),
            serial,
            host_port,
            ready_line: String::new(),
            boot_time: Duration::ZERO,
        };
        let exited = |vm: &mut Self| -> Option<VmError> {
            let status = vm.child.try_wait().ok().flatten()?;
            Some(VmError::QemuExited {
                status: status.to_string(),
                stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            })
        };

        // QMP first: the socket appears as soon as QEMU is initialised.
        let deadline = started + config.ready_timeout;
        loop {
            if let Some(e) = exited(&mut vm) {
                return Err(e);
            }
            if qmp_path.exists()
                && let Ok(qmp) = Qmp::connect(&qmp_path)
            {
                vm.qmp = Some(QmpHandle(qmp));
                break;
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: "the QMP socket".into(),
                    serial_tail: vm.serial_tail(),
                });
            }
            std::thread::sleep(SERIAL_POLL);
        }
        loop {
            let log = vm.serial_log();
            let complete = log
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find(|l| l.contains(READY_MARKER));
            if let Some(line) = complete.map(str::trim_end) {
                vm.ready_line = line.to_string();
                vm.shell = Some(connect_guest_shell(&shell_path, deadline)?);
                vm.boot_time = started.elapsed();
                return Ok(vm);
            }
            if let Some(e) = exited(&mut vm) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: READY_MARKER.into(),
                    serial_tail: vm.serial_tail(),
                });
            }
            std::thread::sleep(SERIAL_POLL);
        }
    }

    /// Where the agent in the guest is reachable from the host.
    pub fn agent_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.host_port))
    }

    /// The READY line (it says whether the kiosk and the agent are up).
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// Wall time from starting QEMU to READY.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Path of the serial console log.
    pub fn serial_path(&self) -> &Path {
        &self.serial
    }

    /// The whole serial console log so far (lossy UTF-8).
    pub fn serial_log(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Current length of the serial log, to wait only for lines after it.
    pub fn serial_mark(&self) -> usize {
        std::fs::metadata(&self.serial)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    fn serial_tail(&self) -> String {
        let log = self.serial_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until a serial line after byte offset `mark` contains `needle`;
    /// returns that line.
    pub fn wait_serial(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.serial_log();
            let after = log.get(mark.min(log.len())..).unwrap_or("");
            // Only complete lines count: a line may be half written.
            if let Some(line) = after
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find(|l| l.contains(needle))
            {
                return Ok(line.trim_end().to_string());
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("serial line containing {needle:?}"),
                    serial_tail: self.serial_tail(),
                });
            }
            std::thread::sleep(SERIAL_POLL);
        }
    }

    /// Runs a QMP command and returns its `return` value.
    pub fn qmp(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        let qmp = self.qmp.as_mut().ok_or_else(|| VmError::Qmp {
            command: command.into(),
            detail: "not connected".into(),
        })?;
        qmp.0.execute(command, arguments)
    }

    /// Unplugs the device with QEMU id `id` (QMP `device_del`) and waits
    /// until QEMU has removed it. The device must sit on a hot-pluggable bus
    /// (behind a `pcie-root-port` on q35, or on USB); the guest takes part
    /// (QEMU's ACPI PCI hotplug: the kernel ejects the slot at once; native
    /// PCIe hotplug waits out the attention-button delay of about 5 s), so a
    /// guest that does not answer ends in a timeout naming the device.
    pub fn device_del(&mut self, id: &str, timeout: Duration) -> Result<(), VmError> {
        self.qmp("device_del", Some(json!({ "id": id })))?;
        let deadline = Instant::now() + timeout;
        loop {
            let children = self.qmp("qom-list", Some(json!({ "path": "/machine/peripheral" })))?;
            let present = children
                .as_array()
                .is_some_and(|c| c.iter().any(|p| p["name"] == id));
            if !present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("QEMU to remove device {id} after device_del"),
                    serial_tail: self.serial_tail(),
                });
            }
            std::thread::sleep(DEVICE_DEL_POLL);
        }
    }

    /// Takes a screendump of the display.
    pub fn screendump(&mut self) -> Result<Screen, VmError> {
        self.screendump_of(DISPLAY_ID)
    }

    /// Takes a screendump of the display device with QEMU id `device` (a
    /// second head added with `-device bochs-display,id=…`).
    pub fn screendump_of(&mut self, device: &str) -> Result<Screen, VmError> {
        let path = self.dir.join("screendump.ppm");
        let _ = std::fs::remove_file(&path);
        self.qmp(
            "screendump",
            Some(json!({ "filename": path.to_string_lossy(), "device": device })),
        )?;
        let data = std::fs::read(&path).map_err(io_err("reading the screendump"))?;
        Screen::from_ppm(&data)
    }

    /// Sends raw `input-send-event` events (one SYN_REPORT after them).
    pub fn send_events(&mut self, events: Value) -> Result<(), VmError> {
        self.qmp(
            "input-send-event",
            Some(json!({ "device": DISPLAY_ID, "events": events })),
        )?;
        Ok(())
    }

    /// Moves the absolute pointer (virtio tablet) to screen pixel (`x`, `y`)
    /// of a screen of `size`. Values are scaled to QEMU's 0..=0x7fff axes,
    /// rounded up so that the guest's scaling back lands on the same pixel.
    pub fn pointer_move(&mut self, x: u32, y: u32, size: (u32, u32)) -> Result<(), VmError> {
        let (ax, ay) = (abs_value(x, size.0), abs_value(y, size.1));
        self.send_events(json!([
            { "type": "abs", "data": { "axis": "x", "value": ax } },
            { "type": "abs", "data": { "axis": "y", "value": ay } },
        ]))
    }

    /// Presses or releases a pointer button.
    pub fn button(&mut self, button: Button, down: bool) -> Result<(), VmError> {
        self.send_events(json!([
            { "type": "btn", "data": { "down": down, "button": button.qmp_name() } },
        ]))
    }

    /// A left click (move, press, release) at screen pixel (`x`, `y`).
    pub fn click(&mut self, x: u32, y: u32, size: (u32, u32)) -> Result<(), VmError> {
        let (ax, ay) = (abs_value(x, size.0), abs_value(y, size.1));
        self.send_events(json!([
            { "type": "abs", "data": { "axis": "x", "value": ax } },
            { "type": "abs", "data": { "axis": "y", "value": ay } },
            { "type": "btn", "data": { "down": true, "button": "left" } },
        ]))?;
        self.button(Button::Left, false)
    }

    /// Presses or releases a key, named by its QEMU qcode (`"a"`, `"ret"`,
    /// `"esc"`, `"f2"`, `"shift"`, `"spc"`, …).
    pub fn key(&mut self, qcode: &str, down: bool) -> Result<(), VmError> {
        self.send_events(json!([
            { "type": "key", "data": { "down": down, "key": { "type": "qcode", "data": qcode } } },
        ]))
    }

    /// Presses and releases a key.
    pub fn tap_key(&mut self, qcode: &str) -> Result<(), VmError> {
        self.key(qcode, true)?;
        self.key(qcode, false)
    }

    /// Types ASCII letters, digits and spaces as key taps.
    pub fn type_text(&mut self, text: &str) -> Result<(), VmError> {
        for c in text.chars() {
            let code = match c {
                ' ' => "spc".to_string(),
                c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase().to_string(),
                c => {
                    return Err(VmError::Qmp {
                        command: "type_text".into(),
                        detail: format!("no qcode for {c:?}"),
                    });
                }
            };
            self.tap_key(&code)?;
        }
        Ok(())
    }

    /// Runs `command` with `sh` in the guest (as root, cwd `/`) and returns
    /// its exit status and combined stdout/stderr. Commands run one at a
    /// time; a command that does not finish within `timeout` is an error
    /// (and the guest shell is left busy with it).
    pub fn exec(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, VmError> {
        use std::io::Read as _;
        self.exec_count += 1;
        let marker = format!("__shoulder_exec_{}__", self.exec_count);
        let shell = self.shell.as_mut().ok_or_else(|| VmError::Io {
            what: "guest shell".into(),
            source: io::Error::new(io::ErrorKind::NotConnected, "no guest shell on ttyS1"),
        })?;
        // The command travels base64-encoded into a script file, so any
        // quoting or newlines in it survive, and `exit` in it ends only that
        // script; the marker line carries the status.
        let script = format!(
            "echo {} | base64 -d >/tmp/.exec.sh; sh /tmp/.exec.sh </dev/null 2>&1; \
             printf '\\n%s %d\\n' {marker} $?\n",
            base64(command.as_bytes())
        );
        shell
            .write_all(script.as_bytes())
            .map_err(io_err("writing to the guest shell"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf);
            if let Some(at) = text.find(&format!("\n{marker} ")) {
                let rest = &text[at + marker.len() + 2..];
                if let Some(end) = rest.find('\n') {
                    let status = rest[..end].trim().parse().unwrap_or(-1);
                    return Ok(ExecOutput {
                        status,
                        output: text[..at].to_string(),
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::Timeout {
                    what: format!("guest command {command:?}; output so far: {text}"),
                    serial_tail: self.serial_tail(),
                });
            }
            let shell = self.shell.as_mut().expect("checked above");
            shell
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .map_err(io_err("guest shell timeout"))?;
            match shell.read(&mut chunk) {
                Ok(0) => {
                    return Err(VmError::Io {
                        what: "guest shell".into(),
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "closed"),
                    });
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_EXEC_OUTPUT {
                        return Err(VmError::Io {
                            what: format!("guest command {command:?}"),
                            source: io::Error::other("output larger than 4 MiB"),
                        });
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(io_err("reading the guest shell")(e)),
            }
        }
    }

    /// Stops the VM (QMP `quit`, then kill if it lingers) and removes its
    /// temporary files.
    pub fn shutdown(mut self) {
        let _ = self.qmp("quit", None);
        self.stop();
    }

    fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("SHOULDER_KEEP_VM_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        self.stop();
    }
}

/// The QEMU absolute axis value that the guest (range 0..=ABS_MAX scaled to
/// 0..len-1, rounding down) maps back to pixel `pos`.
pub fn abs_value(pos: u32, len: u32) -> u32 {
    if len <= 1 {
        return 0;
    }
    let pos = u64::from(pos.min(len - 1));
    (pos * u64::from(ABS_MAX)).div_ceil(u64::from(len - 1)) as u32
}

/// Connects to the guest shell (a virtio serial port) and checks that it
/// answers: the guest restarts its shell while no host is connected, so
/// ping until an answer comes back.
fn connect_guest_shell(path: &Path, deadline: Instant) -> Result<UnixStream, VmError> {
    use std::io::Read as _;
    let what = || format!("connecting to the guest shell at {}", path.display());
    let mut stream = UnixStream::connect(path).map_err(io_err(what()))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(io_err(what()))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    for n in 0u32.. {
        let pong = format!("__shoulder_shell_{n}__");
        stream
            .write_all(format!("echo {pong}\n").as_bytes())
            .map_err(io_err(what()))?;
        let ping_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < ping_until {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(io_err(what())(e)),
            }
            if String::from_utf8_lossy(&buf).contains(&format!("{pong}\n")) {
                // Answers to earlier pings may still come: wait for them and
                // drop everything, so the first command's output is clean.
                let quiet_until = Instant::now() + Duration::from_millis(200);
                while Instant::now() < quiet_until {
                    if let Ok(0) = stream.read(&mut chunk) {
                        break;
                    }
                }
                return Ok(stream);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(VmError::Timeout {
        what: "the guest shell to answer".into(),
        serial_tail: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// Standard base64 with padding (the guest decodes it with busybox).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn free_port() -> Result<u16, VmError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port();
    Ok(port)
}

/// Writes the image's initramfs followed by a second archive with the
/// per-boot files.
fn write_initramfs(base: &Path, config: &VmConfig, out: &Path) -> Result<(), VmError> {
    let mut data = std::fs::read(base).map_err(io_err(format!("reading {}", base.display())))?;
    let mut files = config.files.clone();
    if !config.boot_env.is_empty() {
        let mut env = config.boot_env.join("\n");
        env.push('\n');
        files.push(GuestFile {
            path: "/etc/shoulder/boot.env".into(),
            contents: env.into_bytes(),
            mode: 0o644,
        });
    }
    if !files.is_empty() {
        // The kernel reads archives back to back, each starting 4-aligned.
        while !data.len().is_multiple_of(4) {
            data.push(0);
        }
        data.extend_from_slice(&newc_archive(&files));
    }
    std::fs::write(out, data).map_err(io_err(format!("writing {}", out.display())))
}

/// A newc cpio archive of `files`, with their parent directories.
pub fn newc_archive(files: &[GuestFile]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut ino = 1u32;
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                newc_entry(&mut out, ino, 0o040755, &parent, &[]);
                ino += 1;
            }
        }
        newc_entry(
            &mut out,
            ino,
            0o100000 | (file.mode & 0o7777),
            path,
            &file.contents,
        );
        ino += 1;
    }
    newc_entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_values_map_back_to_the_same_pixel() {
        for len in [320u32, 800, 1024, 1280, 1920] {
            for pos in [0, 1, len / 3, len / 2, len - 2, len - 1] {
                let v = abs_value(pos, len);
                assert!(v <= ABS_MAX);
                // The guest scales as the kiosk does: v * (len - 1) / ABS_MAX.
                let back = u64::from(v) * u64::from(len - 1) / u64::from(ABS_MAX);
                assert_eq!(back, u64::from(pos), "len {len} pos {pos}");
            }
        }
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"exit 3\n\xff"), "ZXhpdCAzCv8=");
    }

    #[test]
    fn ppm_round_trip_and_errors() {
        let screen = Screen {
            width: 2,
            height: 1,
            rgb: vec![1, 2, 3, 4, 5, 6],
        };
        let mut data = b"P6\n# comment\n2 1\n255\n".to_vec();
        data.extend_from_slice(&screen.rgb);
        assert_eq!(Screen::from_ppm(&data).unwrap(), screen);
        assert_eq!(screen.to_xrgb8888(), vec![3, 2, 1, 0, 6, 5, 4, 0]);
        assert!(Screen::from_ppm(b"P3\n2 1\n255\n").is_err());
        assert!(Screen::from_ppm(b"P6\n2 1\n255\n\x01").is_err());
        assert!(Screen::from_ppm(b"P6\n99999 99999\n255\n").is_err());
    }

    #[test]
    fn newc_archive_layout() {
        let archive = newc_archive(&[GuestFile {
            path: "/etc/shoulder/x".into(),
            contents: b"hello".to_vec(),
            mode: 0o600,
        }]);
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.starts_with("070701"));
        // Directories etc and etc/shoulder, then the file, then the trailer.
        let names: Vec<&str> = [
            "etc\0",
            "etc/shoulder\0",
            "etc/shoulder/x\0",
            "TRAILER!!!\0",
        ]
        .into_iter()
        .filter(|n| text.contains(n))
        .collect();
        assert_eq!(names.len(), 4);
        assert!(text.contains("hello"));
    }
}
