//! A WorkOS fixture server on 127.0.0.1: the documented shapes of the JWKS, List Organizations,
//! List Organization Memberships and the Events API over real HTTP/1.1, with faults on demand
//! (statuses with `Retry-After`, hangs) and a retention limit for event cursors.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "sk_test_fixture_9b1f3c2d7e";
pub const CLIENT_ID: &str = "client_SYNCTEST";

/// A fault served instead of the next answer to an authenticated request.
#[derive(Clone, Debug)]
pub enum Fault {
    Status(u16, Option<&'static str>),
    Hang(Duration),
}

/// What the fixture serves, and what it was asked.
#[derive(Default)]
pub struct State {
    pub jwks: Value,
    pub organizations: Vec<Value>,
    pub memberships: Vec<Value>,
    pub events: Vec<Value>,
    pub faults: VecDeque<Fault>,
    /// Faults served on every authenticated request (an outage).
    pub outage: Option<u16>,
    /// Event ids before this index are past retention: `after` one of them is refused.
    pub retained_from: usize,
    pub requests: Vec<(Instant, String)>,
}

/// A running fixture.
pub struct Fixture {
    pub base: String,
    pub state: Arc<Mutex<State>>,
}

impl Fixture {
    /// Starts the server on an ephemeral loopback port.
    pub fn start() -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State {
            jwks: json!({"keys": []}),
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Fixture { base, state }
    }

    /// The issuer the fixture's tokens carry.
    pub fn issuer(&self) -> String {
        format!("{}/user_management/{CLIENT_ID}", self.base)
    }

    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Appends an event of `kind` about `data`, created now; returns its id.
    pub fn event(&self, kind: &str, data: Value) -> String {
        self.with(|s| {
            let id = format!("event_{:06}", s.events.len() + 1);
            s.events.push(json!({"object": "event", "id": id, "event": kind, "data": data,
                                 "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}));
            id
        })
    }
}

/// A membership object as WorkOS documents it.
pub fn membership(id: &str, user: &str, org: &str, status: &str, updated_s: i64) -> Value {
    json!({"object": "organization_membership", "id": id, "user_id": user, "organization_id": org,
           "role": {"slug": "member"}, "status": status, "created_at": time(0), "updated_at": time(updated_s)})
}

/// An organization object as WorkOS documents it.
pub fn organization(id: &str, name: &str, external_id: Option<&str>, updated_s: i64) -> Value {
    json!({"object": "organization", "id": id, "name": name, "external_id": external_id,
           "created_at": time(0), "updated_at": time(updated_s)})
}

/// A fixed timestamp `s` seconds after a base (versions compare by these).
pub fn time(s: i64) -> String {
    let t = chrono::DateTime::from_timestamp(1_760_000_000 + s, 0).unwrap();
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Decodes `%XX` and `+` in a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request, answered and closed.
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut auth = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("authorization: ") {
            auth = Some(line[15..].trim().to_string());
            let _ = v;
        }
        if let Some(v) = lower.strip_prefix("content-length: ") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k).trim_end_matches("[]").to_string(), decode(v))
        })
        .collect();
    let (status, retry_after, body) = answer(state, path, &params, auth.as_deref(), &target);
    let mut stream = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(r) = retry_after {
        head.push_str(&format!("Retry-After: {r}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// The answer to one request: status, `Retry-After`, body.
fn answer(
    state: &Mutex<State>,
    path: &str,
    params: &[(String, String)],
    auth: Option<&str>,
    target: &str,
) -> (u16, Option<&'static str>, String) {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let all = |name: &str| {
        params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let mut s = state.lock().unwrap();
    s.requests.push((Instant::now(), target.to_string()));
    if path == format!("/sso/jwks/{CLIENT_ID}") {
        return (200, None, s.jwks.to_string());
    }
    if auth != Some(&format!("Bearer {API_KEY}")) {
        return (401, None, json!({"message": "Unauthorized"}).to_string());
    }
    if let Some(status) = s.outage {
        return (status, None, json!({"message": "outage"}).to_string());
    }
    if let Some(fault) = s.faults.pop_front() {
        match fault {
            Fault::Status(status, retry) => return (status, retry, json!({"message": "fault"}).to_string()),
            Fault::Hang(d) => {
                drop(s);
                std::thread::sleep(d);
                return (500, None, "{}".into());
            }
        }
    }
    let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(10).min(100);
    let page = |items: Vec<Value>, after: Option<String>| -> String {
        let start = after
            .and_then(|a| items.iter().position(|i| i["id"] == a.as_str()).map(|p| p + 1))
            .unwrap_or(0);
        let data: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
        let next = if data.len() == limit {
            data.last().map(|d| d["id"].clone())
        } else {
            None
        };
        json!({"object": "list", "data": data, "list_metadata": {"after": next, "before": null}}).to_string()
    };
    match path {
        "/organizations" => (200, None, page(s.organizations.clone(), get("after"))),
        "/user_management/organization_memberships" => {
            let org = get("organization_id");
            let mut statuses = all("statuses");
            if statuses.is_empty() {
                statuses.push("active".into()); // only active ones by default, as documented
            }
            let items = s
                .memberships
                .iter()
                .filter(|m| Some(m["organization_id"].as_str().unwrap_or("").to_string()) == org)
                .filter(|m| statuses.iter().any(|st| m["status"] == st.as_str()))
                .cloned()
                .collect();
            (200, None, page(items, get("after")))
        }
        "/events" => {
            let kinds = all("events");
            if kinds.is_empty() {
                return (422, None, json!({"message": "events is required"}).to_string());
            }
            let after = get("after");
            if let Some(a) = &after {
                match s.events.iter().position(|e| e["id"] == a.as_str()) {
                    Some(p) if p >= s.retained_from => {}
                    _ => {
                        return (
                            400,
                            None,
                            json!({"code": "invalid_pagination_cursor", "message": "cursor is invalid or expired"})
                                .to_string(),
                        )
                    }
                }
            }
            let since = get("range_start");
            let items: Vec<Value> = s
                .events
                .iter()
                .skip(s.retained_from)
                .filter(|e| kinds.iter().any(|k| e["event"] == k.as_str()))
                .filter(|e| {
                    since
                        .as_ref()
                        .is_none_or(|t| e["created_at"].as_str().unwrap_or("") >= t.as_str())
                })
                .cloned()
                .collect();
            (200, None, page(items, after))
        }
        _ => (404, None, json!({"message": "not found"}).to_string()),
    }
}
