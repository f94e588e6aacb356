//! Minimal HTTP/1.1 clients for the daemon's endpoints, used where the tests
//! talk to a daemon running inside a container (`support::nspawn`): a bare
//! request over `TcpStream`, then the request sequences an SDK makes.
//! botocore and aws-config are the judges of the endpoints' format (the `daemon`
//! module); these only check that a running daemon serves the right key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::text;

/// A free port on 127.0.0.1 (the container shares the host's network namespace).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request with `Connection: close`: (status, body). The body may
/// hold a secret, so callers never print it.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = text(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response from {method} {path}: {head}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// IMDSv2 as an SDK asks it: a token, the role name, then the role's credentials.
/// Returns the credentials' `AccessKeyId` (never the secret).
pub fn imds_key_id(port: u16) -> Result<String, String> {
    let (status, token) = http(
        port,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    );
    if status != 200 {
        return Err(format!("token: HTTP {status}"));
    }
    let auth = [("X-aws-ec2-metadata-token", token.trim())];
    let base = "/latest/meta-data/iam/security-credentials/";
    let (status, roles) = http(port, "GET", base, &auth);
    if status != 200 {
        return Err(format!("role list: HTTP {status}"));
    }
    let role = roles.lines().next().unwrap_or_default().trim().to_string();
    let (status, body) = http(port, "GET", &format!("{base}{role}"), &auth);
    if status != 200 {
        return Err(format!("credentials of {role:?}: HTTP {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| "credentials: not JSON".to_string())?;
    Ok(json["AccessKeyId"].as_str().unwrap_or_default().to_string())
}

/// The container endpoint as an SDK asks it, with the token from the token file.
pub fn container_key_id(port: u16, token: &str) -> Result<String, String> {
    let path = "/v1/credentials/default";
    let (status, _) = http(port, "GET", path, &[]);
    if status != 401 {
        return Err(format!("without the token: HTTP {status}, not 401"));
    }
    let (status, body) = http(port, "GET", path, &[("Authorization", token)]);
    if status != 200 {
        return Err(format!("with the token: HTTP {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| "credentials: not JSON".to_string())?;
    Ok(json["AccessKeyId"].as_str().unwrap_or_default().to_string())
}
