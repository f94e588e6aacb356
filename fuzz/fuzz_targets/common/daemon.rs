//! What the daemon's endpoint targets share: the fixed clock, a loaded cache for a
//! profile, the request a fuzz input spells, and reading a ready response body.

use std::sync::Arc;

use aovis_agent::daemon::store::{Delivery, Slot, Store};
use aovis_formats::cache::CacheMeta;
use aovis_formats::{Credentials, ProfileName, SecretString};
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::http::request::Parts;
use hyper::Response;

/// The targets' clock: the caches were issued and received now and live an hour.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).expect("a fixed time")
}

/// Puts a fresh delivery of `role` for `profile` into `store`, holding `secret`.
pub fn load(store: &Store, profile: &ProfileName, role: &str, key_id: String, secret: &str) {
    let credentials = Credentials::new(
        key_id,
        SecretString::new(secret.into()),
        SecretString::new(format!("FuZzToKeN-{profile}")),
        now() + TimeDelta::hours(1),
    );
    let meta = CacheMeta {
        serial: 1,
        role_arn: format!("arn:aws:iam::111122223333:role/{role}"),
        instance_id: "mi-0123456789abcdef0".into(),
        issued_at: now(),
        received_at: now(),
    };
    let delivery = Delivery::new(profile, credentials, Some(meta), now());
    store.set(profile.clone(), Slot::Loaded(Arc::new(delivery)));
}

/// The request `input` spells: line 1 the method, line 2 the path, then
/// `name: value` headers, with `before` added ahead of them and `after` behind.
/// `None` when hyper would not build it (it would not reach a handler either).
pub fn request(input: &[u8], before: &[(&str, &str)], after: &[(&str, &str)]) -> Option<Parts> {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let path = lines.next().unwrap_or("/");
    let mut builder = hyper::Request::builder().method(method).uri(path);
    for (name, value) in before {
        builder = builder.header(*name, *value);
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    for (name, value) in after {
        builder = builder.header(*name, *value);
    }
    builder.body(()).ok().map(|request| request.into_parts().0)
}

/// A response's body, as text. Handlers answer with a `Full`, ready at once, so one
/// poll with a no-op waker reads it.
pub fn body(response: Response<Full<Bytes>>) -> String {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(response.into_body().collect());
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        _ => String::new(),
    }
}
