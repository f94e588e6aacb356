//! Sealing envelopes the way the rotator does (age to the host's recipient, then
//! standard base64), with two independent implementations: the reference `age`
//! command-line tool (Debian package `age`) and the `age` crate. A delivery that
//! only our own code could open would prove nothing about the format.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;

use super::{KEY_ID, SECRET, TOKEN};

/// The instance id of the simulated host.
pub const HOST_ID: &str = "mi-0123456789abcdef0";
/// The role of the fixture envelopes.
pub const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/onprem";

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Seals `plaintext` to `recipient` with the `age` crate.
pub fn seal_with_crate(recipient: &str, plaintext: &[u8]) -> String {
    let recipient: age::x25519::Recipient = recipient.parse().unwrap();
    b64(&age::encrypt(&recipient, plaintext).unwrap())
}

/// Seals `plaintext` to `recipient` with the reference `age` CLI (binary output).
pub fn seal_with_cli(recipient: &str, plaintext: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sealed.age");
    let mut child = Command::new("age")
        .args(["-r", recipient, "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the `age` CLI is missing: apt-get install age");
    child.stdin.take().unwrap().write_all(plaintext).unwrap();
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "age failed: {status:?}");
    b64(&std::fs::read(out).unwrap())
}

/// Opens a base64 payload with the reference `age` CLI and the key file.
pub fn open_with_cli(key_file: &Path, payload: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let sealed = dir.path().join("sealed.age");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .unwrap();
    std::fs::write(&sealed, bytes).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key_file)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(out.status.success(), "age -d failed: {out:?}");
    out.stdout
}

/// An envelope's plaintext with the fixture credentials.
pub fn envelope(
    instance_id: &str,
    profile: &str,
    serial: u64,
    issued_at: &str,
    expiration: &str,
) -> String {
    format!(
        r#"{{"v":1,"instance_id":"{instance_id}","profile":"{profile}","serial":{serial},"issued_at":"{issued_at}","role_arn":"{ROLE_ARN}","credentials":{{"AccessKeyId":"{KEY_ID}","SecretAccessKey":"{SECRET}","SessionToken":"{TOKEN}","Expiration":"{expiration}"}}}}"#
    )
}
