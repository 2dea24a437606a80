//! with-build-secrets URL COMMAND [ARG...]: runs a command with the job's secret build env,
//! fetched from racetrackd while the build runs (the rust counterpart of the golang job type's
//! tool, for build images without Python). The values live only in this process's environment
//! and its child's: nothing is written to the image, and the URL in `docker history` stops
//! working once the build is over.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: with-build-secrets URL COMMAND [ARG...]");
        std::process::exit(2);
    }
    let secrets = match fetch(&args[1]) {
        Ok(secrets) => secrets,
        Err(error) => {
            eprintln!("racetrackd: cannot fetch the secret build env ({})", error);
            std::process::exit(1);
        }
    };
    let error = Command::new(&args[2]).args(&args[3..]).envs(secrets).exec();
    eprintln!("racetrackd: cannot run {}: {}", args[2], error);
    std::process::exit(126);
}

/// {"env": {NAME: VALUE}} from the daemon: plain HTTP to the host's address (the daemon is local).
fn fetch(url: &str) -> Result<Vec<(String, String)>, String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|error| error.to_string())?;
    write!(stream, "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n", path, host)
        .map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {}", status));
    }
    let payload: serde_json::Value = serde_json::from_str(body).map_err(|error| error.to_string())?;
    let env = payload.get("env").and_then(|env| env.as_object()).ok_or("no env in the answer")?;
    Ok(env
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())))
        .collect())
}
