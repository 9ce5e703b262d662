//! `presencectl login x --account NAME`: the human half of an OAuth 2.0 login.
//!
//! The daemon holds the app's credentials and the PKCE verifier; this side only shows the
//! URL, catches the browser's redirect on a loopback port (or takes the redirected URL
//! pasted into the terminal, for a browser on another machine) and hands the code back.
//! The code lives for 30 seconds at X, so it is passed on at once.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use presencectl::client::{Client, ClientError};
use presencectl::proto::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How long to wait for the human to approve in the browser.
const WAIT: Duration = Duration::from_secs(10 * 60);
/// The most of a browser's request read while looking for the request line.
const MAX_REQUEST: usize = 16 * 1024;

pub fn run(socket: &Path, account: &str, port: u16, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presencectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(login(socket, account, port)) {
        Ok(message) => {
            if json {
                println!("{}", serde_json::json!({ "ok": message }));
            } else {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            eprintln!("presencectl: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Client(err @ ClientError::Unreachable { .. })) => {
            eprintln!("presencectl: {err}");
            eprintln!("hint: is presenced running? try: systemctl status presenced");
            ExitCode::from(69)
        }
        Err(Failure::Client(err)) => {
            eprintln!("presencectl: {err}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Refused(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

async fn login(socket: &Path, account: &str, port: u16) -> Result<String, Failure> {
    // Listen before asking for the URL, so the redirect always has somewhere to go.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| Failure::Refused(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let start =
        Request::LoginStart { account: account.to_owned(), redirect_uri: redirect_uri.clone() };
    let url = match Client::connect(socket).await?.call(&start).await? {
        Response::LoginUrl(url) => url,
        Response::Error(e) => return Err(Failure::Refused(e.message)),
        other => return Err(Failure::Refused(format!("unexpected answer: {other:?}"))),
    };
    eprintln!("Open this URL in a browser and approve the app:\n\n  {url}\n");
    eprintln!("Waiting for the redirect to {redirect_uri} (or paste the URL you were sent to):");
    let (code, state) = tokio::time::timeout(WAIT, redirect(&listener))
        .await
        .map_err(|_| Failure::Refused("no redirect within 10 minutes; nothing changed".into()))??;
    // A new connection: the first one may have idled out while the human was in the browser.
    let finish = Request::LoginFinish { account: account.to_owned(), state, code };
    match Client::connect(socket).await?.call(&finish).await? {
        Response::Done(message) => Ok(message),
        Response::Error(e) => Err(Failure::Refused(e.message)),
        other => Err(Failure::Refused(format!("unexpected answer: {other:?}"))),
    }
}

/// The first of: the browser's redirect on the listener, or a pasted redirect URL.
async fn redirect(listener: &TcpListener) -> Result<(String, String), Failure> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    // No terminal (or end of input): then only the redirect can finish.
    let mut stdin_open = true;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let mut buf = vec![0u8; MAX_REQUEST];
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                    .await
                    .unwrap_or(Ok(0))
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = head.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("");
                match code_and_state(target) {
                    Ok(found) => {
                        let _ = stream.write_all(page("presence: logged in, you can close this window.").as_bytes()).await;
                        return Ok(found);
                    }
                    Err(why) => {
                        // A favicon request or similar: answer and keep waiting.
                        let _ = stream.write_all(page(&why).as_bytes()).await;
                    }
                }
            }
            line = stdin.next_line(), if stdin_open => {
                match line {
                    Ok(Some(line)) if !line.trim().is_empty() => match code_and_state(line.trim()) {
                        Ok(found) => return Ok(found),
                        Err(why) => eprintln!("{why}; paste the whole URL the browser was sent to"),
                    },
                    Ok(Some(_)) => {}
                    _ => stdin_open = false,
                }
            }
        }
    }
}

/// `code` and `state` from a redirect target (`/callback?code=..&state=..`) or a whole URL.
fn code_and_state(target: &str) -> Result<(String, String), String> {
    let url = url::Url::parse(target)
        .or_else(|_| url::Url::parse(&format!("http://127.0.0.1{target}")))
        .map_err(|_| format!("not a redirect URL: {target:?}"))?;
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    if let Some(error) = get("error") {
        let detail = get("error_description").unwrap_or_default();
        return Err(format!("the login was refused: {error} {detail}").trim().to_owned());
    }
    match (get("code"), get("state")) {
        (Some(code), Some(state)) => Ok((code, state)),
        _ => Err("no code and state in this URL".to_owned()),
    }
}

fn page(text: &str) -> String {
    let body =
        format!("<!doctype html><title>presence</title><p>{}</p>", text.replace('<', "&lt;"));
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::code_and_state;

    #[test]
    fn redirects_pasted_or_received() {
        let want = Ok(("abc".to_owned(), "xyz".to_owned()));
        assert_eq!(code_and_state("/callback?state=xyz&code=abc"), want);
        assert_eq!(code_and_state("http://127.0.0.1:8976/callback?code=abc&state=xyz"), want);
        assert!(code_and_state("/favicon.ico").is_err());
        assert!(code_and_state("/callback?error=access_denied&state=xyz")
            .unwrap_err()
            .contains("access_denied"));
    }
}
