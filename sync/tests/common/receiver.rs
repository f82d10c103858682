//! An alert receiver on 127.0.0.1 standing in for a webhook endpoint, Slack or PagerDuty over
//! real HTTP/1.1: it records every request and answers from a script (statuses with
//! `Retry-After`, a held answer), else 200 (202 with PagerDuty's body when `pagerduty`).

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16, Option<&'static str>),
    /// Hold the connection this long before answering 200 (the companion can be killed then).
    Hold(Duration),
}

/// What the receiver has seen and will answer.
#[derive(Default)]
pub struct State {
    pub received: Vec<Received>,
    pub script: VecDeque<Answer>,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts on an ephemeral loopback port.
    pub fn start(pagerduty: bool) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap(), pagerduty)
    }

    /// Starts on `port` (a receiver that comes back where it was).
    pub fn start_on(port: u16, pagerduty: bool) -> Receiver {
        Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), pagerduty)
    }

    fn on(listener: TcpListener, pagerduty: bool) -> Receiver {
        let url = format!("http://127.0.0.1:{}/alerts", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state, pagerduty));
            }
        });
        Receiver { url, state }
    }

    /// Answers the next requests with `answers`, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.state.lock().unwrap().script.extend(answers.iter().cloned());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

/// Reads one request, records it, answers it and closes the connection.
fn serve(stream: TcpStream, state: &Mutex<State>, pagerduty: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let received = Received {
        at: Instant::now(),
        path: request_line.split_whitespace().nth(1).unwrap_or("/").to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let answer = {
        let mut state = state.lock().unwrap();
        state.received.push(received);
        state.script.pop_front()
    };
    let (status, retry_after) = match answer {
        Some(Answer::Status(status, retry_after)) => (status, retry_after),
        Some(Answer::Hold(wait)) => {
            std::thread::sleep(wait);
            (200, None)
        }
        None => (if pagerduty { 202 } else { 200 }, None),
    };
    let reply = if pagerduty && status == 202 {
        r#"{"status":"success","message":"Event processed"}"#
    } else if status < 300 {
        "ok"
    } else {
        "invalid_payload"
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.len()
    );
    if let Some(r) = retry_after {
        head.push_str(&format!("Retry-After: {r}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.as_bytes());
}
