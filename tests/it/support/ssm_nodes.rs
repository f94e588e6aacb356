//! `tests/fakes/ssm_nodes.py` from Rust: simulated managed nodes in front of moto.
//! The script's docstring says exactly what it fakes (the SSM Agent side, which
//! moto does not have) and what it forwards to moto unchanged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{bin, python, repo_root, TempHost};

/// One simulated managed node.
pub struct NodeSpec {
    pub instance_id: &'static str,
    pub online: bool,
    pub tags: &'static [(&'static str, &'static str)],
}

/// A running stand-in with its nodes' directories; killed on drop.
pub struct SsmNodes {
    child: Child,
    port: u16,
    hosts: Vec<(String, TempHost)>,
    _dir: tempfile::TempDir,
}

impl SsmNodes {
    /// Starts the stand-in in front of moto at `moto_url` with these nodes, running
    /// the built `aovis-agent` as `/usr/bin/aovis-agent`.
    pub fn start(moto_url: &str, nodes: &[NodeSpec], faults: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<(String, TempHost)> = nodes
            .iter()
            .map(|n| (n.instance_id.to_owned(), TempHost::new()))
            .collect();
        let listing: Vec<serde_json::Value> = nodes
            .iter()
            .zip(&hosts)
            .map(|(node, (_, host))| {
                let tags: serde_json::Map<String, serde_json::Value> = node
                    .tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                    .collect();
                serde_json::json!({
                    "instance_id": node.instance_id,
                    "online": node.online,
                    "tags": tags,
                    "state_dir": host.state_dir(),
                    "config_dir": host.config_dir(),
                })
            })
            .collect();
        let nodes_file = dir.path().join("nodes.json");
        std::fs::write(&nodes_file, serde_json::to_vec(&listing).unwrap()).unwrap();
        let mut child = Command::new(python())
            .arg(script())
            .args(["--moto", moto_url, "--listen", "0", "--nodes"])
            .arg(&nodes_file)
            .arg("--agent")
            .arg(bin("aovis-agent"))
            .args(["--faults", faults])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("ssm_nodes.py did not start: {line:?}"));
        let port = started["port"].as_u64().unwrap() as u16;
        Self {
            child,
            port,
            hosts,
            _dir: dir,
        }
    }

    /// The endpoint the rotator uses (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directories of one node.
    pub fn host(&self, instance_id: &str) -> &TempHost {
        &self
            .hosts
            .iter()
            .find(|(id, _)| id == instance_id)
            .unwrap()
            .1
    }

    /// Runs `aovis-agent enroll` on a node, as SSM Agent would; returns the recipient.
    pub fn enroll(&self, instance_id: &str) -> String {
        let out = self
            .host(instance_id)
            .command("aovis-agent")
            .arg("enroll")
            .env("AWS_SSM_INSTANCE_ID", instance_id)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", super::text(&out.stderr));
        super::text(&out.stdout).trim().to_owned()
    }

    /// Switches the injected faults (see the script's docstring).
    pub fn set_faults(&self, faults: &str) {
        self.request("POST", "/_fakes/faults", faults);
    }

    /// Every invocation the nodes ran, with full stdout and stderr.
    pub fn invocations(&self) -> serde_json::Value {
        serde_json::from_str(&self.request("GET", "/_fakes/invocations", "")).unwrap()
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "{response}"
        );
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for SsmNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    repo_root().join("tests/fakes/ssm_nodes.py")
}
