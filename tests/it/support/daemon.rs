//! `aovis-agent run` as a child process, with its log captured, plus a minimal
//! HTTP/1.1 client for poking its endpoints byte by byte.
//!
//! The daemon listens on port 0 (the kernel picks a free port, so parallel tests
//! never collide) and logs each bound address; [`Daemon::start`] reads them back
//! from the log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::TempHost;

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The IMDS endpoint's address, when enabled.
    pub imds: Option<SocketAddr>,
    /// The container endpoint's address, when enabled.
    pub container: Option<SocketAddr>,
    /// Every bound address, with its endpoint (`imds` or `container`).
    pub listening: Vec<(String, SocketAddr)>,
    /// The config file it was started with.
    pub config_path: PathBuf,
}

impl Daemon {
    /// Writes `config` as the host's agent.toml and starts the daemon with `env`
    /// added; waits for its `ready` line.
    pub fn start(host: &TempHost, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_as(host, config, env, &[])
    }

    /// Like [`Daemon::start`], with the binary run through `wrapper` (for example
    /// `setpriv --reuid=...` to drop privileges as systemd's `User=` would).
    pub fn start_as(host: &TempHost, config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let config_path = host.config_dir().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = match wrapper.split_first() {
            None => host.command("aovis-agent"),
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command
                    .args(args)
                    .arg(super::bin("aovis-agent"))
                    .env("AOVIS_STATE_DIR", host.state_dir())
                    .env("AOVIS_CONFIG_DIR", host.config_dir())
                    .stdin(Stdio::null());
                command
            }
        };
        command
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut daemon = Self {
            child,
            log,
            imds: None,
            container: None,
            listening: Vec::new(),
            config_path,
        };
        assert!(
            daemon.wait_for_log(" ready status=", Duration::from_secs(15)),
            "the daemon did not become ready; log:\n{}",
            daemon.log()
        );
        for (_, line) in daemon.log.lock().unwrap().iter() {
            if !line.contains("listening") {
                continue;
            }
            let address: Option<SocketAddr> = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("address="))
                .and_then(|text| text.parse().ok());
            let endpoint = if line.contains("endpoint=\"imds\"") {
                "imds"
            } else {
                "container"
            };
            if let Some(address) = address {
                daemon.listening.push((endpoint.to_owned(), address));
            }
        }
        let first = |name: &str| {
            daemon
                .listening
                .iter()
                .find(|(endpoint, _)| endpoint == name)
                .map(|(_, address)| *address)
        };
        daemon.imds = first("imds");
        daemon.container = first("container");
        daemon
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        let lines = self.log.lock().unwrap();
        let mut text = String::new();
        for (_, line) in lines.iter() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// When the first log line holding `needle` arrived (as the test saw it).
    pub fn first_seen(&self, needle: &str) -> Option<Instant> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(at, _)| *at)
    }

    /// How many log lines hold `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .filter(|(_, line)| line.contains(needle))
            .count()
    }

    /// Waits until a log line holds `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.first_seen(needle).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// Waits for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// `http://<imds address>`.
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds.expect("IMDS is not enabled"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    /// The status code; 0 when the server closed without answering.
    pub status: u16,
    /// The raw head and body.
    pub raw: String,
}

impl Reply {
    /// The body (after the blank line).
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

/// Sends raw bytes, reads until the server closes (or 5 s pass).
pub fn send_raw(address: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may close before reading everything (a refused huge body).
    let _ = stream.write_all(request);
    read_reply(&mut stream)
}

/// Reads a reply until the server closes the connection.
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Reply { status, raw }
}

/// A request with `Connection: close` and the given headers.
pub fn request(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    send_raw(address, text.as_bytes())
}

/// An IMDSv2 session token from the daemon.
pub fn imds_token(address: SocketAddr) -> String {
    let reply = request(
        address,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    reply.body().to_owned()
}
