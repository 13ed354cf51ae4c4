//! Talking to the user for a provider: always on the controlling terminal (stdout is the
//! tool's protocol channel), never when the tool is non-interactive, and always labelled
//! with the provider's name with its text neutralised, so a provider can neither draw on
//! the terminal nor pass itself off as credence or another provider.

use credence_signing::PromptKind;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

pub use credence::terminal::{
    ControllingTerminal, MAX_ANSWER_BYTES, Terminal, interactive_only_with_a_terminal, neutralise, neutralise_within,
};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("the tool runs non-interactively")]
    NotInteractive,
    #[error("the user cancelled")]
    Cancelled,
    #[error("{0}")]
    Unavailable(String),
}

/// The effective prompt capability of one provider for one request.
pub struct PromptCapability {
    label: String,
    interactive: bool,
    allowed: BTreeSet<PromptKind>,
    terminal: Option<Box<dyn Terminal>>,
    /// What a sign-in is for, shown with every device code and authorization URL: the
    /// neutralised URL being authenticated and who asked.
    signing_in_for: String,
}

/// A device code as a provider hands it over, checked before it is shown.
pub struct DeviceCode<'a> {
    pub verification_uri: &'a str,
    pub verification_uri_complete: Option<&'a str>,
    pub user_code: &'a str,
    pub expires_in_s: u32,
}

const MAX_USER_CODE: usize = 32;
/// The authorization URL is shown whole (it is at most 8 KiB, and printable ASCII once parsed).
const MAX_URL_SHOWN: usize = 8 << 10;

impl PromptCapability {
    /// `label` must be the provider's verified name: it is what the user trusts.
    pub fn new(label: &str, interactive: bool, allowed: BTreeSet<PromptKind>, terminal: Box<dyn Terminal>) -> Self {
        PromptCapability {
            label: neutralise(label),
            interactive,
            allowed,
            terminal: Some(terminal),
            signing_in_for: String::new(),
        }
    }

    /// The request a sign-in is for: its URL (shown without userinfo, query or fragment)
    /// and the requester (e.g. "git", or a remote session's label).
    pub fn for_request(mut self, url: &url::Url, requester: &str) -> Self {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        self.signing_in_for = format!("{} (asked by {})", neutralise(shown.as_str()), neutralise(requester));
        self
    }

    /// Whether the tool allows prompts, a terminal is there to show them, and the manifest
    /// declares `kind`: checked before a flow binds a port or opens a browser.
    pub fn may(&self, kind: PromptKind) -> Result<(), PromptError> {
        self.permit(kind)?;
        match &self.terminal {
            Some(t) if t.can_prompt() => Ok(()),
            Some(_) => Err(PromptError::Unavailable("no terminal to show the sign-in on".into())),
            None => Err(PromptError::Unavailable("an earlier prompt timed out".into())),
        }
    }

    /// Whether whoever asked has gone (the tool exited, the agent's client disconnected):
    /// a sign-in for nobody ends.
    pub fn requester_gone(&self) -> bool {
        self.terminal.as_ref().is_some_and(|t| t.gone())
    }

    /// Shows an RFC 8628 device code prominently, with the provider, the URL being signed in
    /// for and who asked, so a code an attacker mailed cannot pass for one of ours. Both
    /// URIs must be https (or loopback http) on an origin `allowed` accepts, and the same one;
    /// they are shown as parsed, never as the provider wrote them.
    pub fn show_device_code(
        &mut self,
        code: &DeviceCode<'_>,
        allowed: impl Fn(&str) -> bool,
        time_left: Duration,
    ) -> Result<(), PromptError> {
        self.may(PromptKind::DeviceCode)?;
        let bad = |m: &str| Err(PromptError::Unavailable(m.to_owned()));
        let parse = |uri: &str| url::Url::parse(uri).ok().filter(|_| allowed(uri));
        let Some(page) = parse(code.verification_uri) else {
            return bad("the verification URI is not on an origin this provider may use");
        };
        let complete = match code.verification_uri_complete {
            Some(uri) => match parse(uri) {
                Some(u) if u.origin() == page.origin() => Some(u),
                _ => return bad("the complete verification URI is not on the verification URI's origin"),
            },
            None => None,
        };
        if code.user_code.is_empty()
            || code.user_code.len() > MAX_USER_CODE
            || !code.user_code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("the user code must be 1-32 letters, digits or '-'");
        }
        let minutes = code.expires_in_s.div_ceil(60).max(1);
        let mut text = format!(
            "[credence] provider \"{}\" asks you to sign in for {}\n[credence]   open  {}\n[credence]   code  {}   (expires in {minutes} min)",
            self.label,
            self.signing_in_for,
            neutralise_within(page.as_str(), MAX_URL_SHOWN),
            code.user_code,
        );
        if let Some(complete) = complete {
            text.push_str(&format!(
                "\n[credence]   or open {} (the code filled in)",
                neutralise_within(complete.as_str(), MAX_URL_SHOWN)
            ));
        }
        self.with_terminal(time_left, move |t| t.show(&text))
    }

    /// Shows the authorization URL the host built (whole: it ends in the parameters the
    /// host added, which a user copying it by hand needs).
    pub fn show_authorization(
        &mut self,
        url: &url::Url,
        message: &str,
        time_left: Duration,
    ) -> Result<(), PromptError> {
        self.may(PromptKind::Authorize)?;
        let text = format!(
            "{}\n[credence]   signing in for {}\n[credence]   opening your browser; if it does not show the page, open:\n[credence]   {}",
            self.line(message),
            self.signing_in_for,
            neutralise_within(url.as_str(), MAX_URL_SHOWN)
        );
        self.with_terminal(time_left, move |t| t.show(&text))
    }

    /// Says that no browser could be started, and why; the URL above still works.
    pub fn show_no_browser(&mut self, why: &str, time_left: Duration) -> Result<(), PromptError> {
        let text = format!(
            "[credence]   no browser could be opened ({}): open the URL above",
            neutralise(why)
        );
        self.with_terminal(time_left, move |t| t.show(&text))
    }

    fn permit(&self, kind: PromptKind) -> Result<(), PromptError> {
        if !self.interactive {
            return Err(PromptError::NotInteractive);
        }
        if !self.allowed.contains(&kind) {
            return Err(PromptError::Unavailable(format!(
                "this provider did not declare the `{}` prompt in its manifest",
                kind.as_str()
            )));
        }
        Ok(())
    }

    fn line(&self, message: &str) -> String {
        format!("[credence] provider \"{}\" says: {}", self.label, neutralise(message))
    }

    /// Asks on the terminal; gives up after `time_left` (the rest of the provider's
    /// wall-clock budget), leaving the blocked reader behind.
    pub fn ask(&mut self, message: &str, secret: bool, time_left: Duration) -> Result<String, PromptError> {
        self.permit(PromptKind::Ask)?;
        let line = self.line(message);
        let answer = self.with_terminal(time_left, move |t| t.ask(&line, secret))?;
        match answer {
            None => Err(PromptError::Cancelled),
            Some(a) if a.len() > MAX_ANSWER_BYTES => Err(PromptError::Unavailable(format!(
                "the answer is longer than {MAX_ANSWER_BYTES} bytes"
            ))),
            Some(a) => Ok(a),
        }
    }

    pub fn show(&mut self, message: &str, time_left: Duration) -> Result<(), PromptError> {
        self.permit(PromptKind::Show)?;
        let line = self.line(message);
        self.with_terminal(time_left, move |t| t.show(&line))
    }

    /// Shows the URL for the user to open; only https URLs, so a provider cannot make the
    /// user open a local file or a custom-scheme handler.
    pub fn open_url(&mut self, url: &str, message: &str, time_left: Duration) -> Result<(), PromptError> {
        self.permit(PromptKind::OpenUrl)?;
        let parsed = url::Url::parse(url).map_err(|e| PromptError::Unavailable(format!("not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(PromptError::Unavailable("only https URLs can be shown to open".into()));
        }
        let line = format!(
            "{}\n[credence]   open: {}",
            self.line(message),
            neutralise(parsed.as_str())
        );
        self.with_terminal(time_left, move |t| t.show(&line))
    }

    fn with_terminal<R: Send + 'static>(
        &mut self,
        time_left: Duration,
        f: impl FnOnce(&mut dyn Terminal) -> std::io::Result<R> + Send + 'static,
    ) -> Result<R, PromptError> {
        let mut terminal = self
            .terminal
            .take()
            .ok_or_else(|| PromptError::Unavailable("an earlier prompt timed out".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = f(terminal.as_mut());
            let _ = tx.send((result, terminal));
        });
        match rx.recv_timeout(time_left) {
            Ok((result, terminal)) => {
                self.terminal = Some(terminal);
                result.map_err(|e| PromptError::Unavailable(format!("no terminal to prompt on: {e}")))
            }
            Err(_) => Err(PromptError::Unavailable("the prompt timed out".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);
    impl Terminal for Recorder {
        fn ask(&mut self, line: &str, _secret: bool) -> std::io::Result<Option<String>> {
            self.0.lock().unwrap().push(line.to_owned());
            Ok(Some("answer".into()))
        }
        fn show(&mut self, line: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(line.to_owned());
            Ok(())
        }
    }

    struct NoTerminal;
    impl Terminal for NoTerminal {
        fn ask(&mut self, _line: &str, _secret: bool) -> std::io::Result<Option<String>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn show(&mut self, _line: &str) -> std::io::Result<()> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn can_prompt(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_request_without_a_terminal_is_not_interactive() {
        let mut request =
            crate::front::request("https://r.example/", crate::request::Protocol::Generic, "read").unwrap();
        request.interactive = true;
        assert!(!interactive_only_with_a_terminal(&request, &NoTerminal).interactive);
        assert!(interactive_only_with_a_terminal(&request, &Recorder::default()).interactive);
        request.interactive = false;
        assert!(!interactive_only_with_a_terminal(&request, &Recorder::default()).interactive);
    }

    fn all() -> BTreeSet<PromptKind> {
        [PromptKind::Ask, PromptKind::Show, PromptKind::OpenUrl].into()
    }
    const T: Duration = Duration::from_secs(5);

    #[test]
    fn non_interactive_ask_fails_without_touching_the_terminal() {
        let rec = Recorder::default();
        let mut p = PromptCapability::new("basic", false, all(), Box::new(rec.clone()));
        assert_eq!(p.ask("password?", true, T), Err(PromptError::NotInteractive));
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn escapes_and_bidi_overrides_are_neutralised_and_the_label_is_ours() {
        let rec = Recorder::default();
        let mut p = PromptCapability::new("evil", true, all(), Box::new(rec.clone()));
        p.show("\x1b[2J\r[credence] trusted\u{202e}exe", T).unwrap();
        let shown = rec.0.lock().unwrap()[0].clone();
        assert_eq!(
            shown,
            "[credence] provider \"evil\" says: \\u{1b}[2J\\u{d}[credence] trusted\\u{202e}exe"
        );
        assert!(!shown.contains('\x1b') && !shown.contains('\u{202e}'));
    }

    #[test]
    fn a_run_of_spaces_cannot_wrap_text_onto_a_fake_credence_line_nor_can_invisible_characters_hide_it() {
        let wrapped = neutralise(&format!("ok{}[credence]   code  EVIL-CODE", " ".repeat(200)));
        assert_eq!(wrapped, "ok        …[credence]   code  EVIL-CODE");
        for hidden in ['\u{00ad}', '\u{3164}', '\u{fe0f}', '\u{e0041}', '\u{115f}'] {
            let shown = neutralise(&format!("a{hidden}b"));
            assert!(!shown.contains(hidden) && shown.contains("\\u{"), "{hidden:?}: {shown}");
        }
    }

    #[test]
    fn neutralised_text_within_a_byte_budget_is_cut_with_a_marker() {
        assert_eq!(neutralise_within("GET", 16), "GET");
        assert_eq!(
            neutralise_within("GET\x1b]0;x\x07\r\n", 64),
            "GET\\u{1b}]0;x\\u{7}\\u{d}\\u{a}"
        );
        let long = format!("GET\x1b[2J{}", "A".repeat(16 << 10));
        let cut = neutralise_within(&long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
        assert!(cut.starts_with("GET\\u{1b}[2JAAA"));
        // Escapes count against the budget, so text of control characters stays bounded too.
        assert!(neutralise_within(&"\x1b".repeat(10_000), 100).len() <= 100);
        assert_eq!(neutralise_within("abcdef", 6), "abcdef");
        assert_eq!(neutralise_within("abcdefg", 6), "abc…");
    }

    #[test]
    fn undeclared_prompt_kinds_and_non_https_urls_are_refused() {
        let mut p = PromptCapability::new("p", true, [PromptKind::Show].into(), Box::new(Recorder::default()));
        assert!(matches!(p.ask("x", false, T), Err(PromptError::Unavailable(_))));
        let mut p = PromptCapability::new("p", true, all(), Box::new(Recorder::default()));
        assert!(p.open_url("file:///etc/passwd", "open", T).is_err());
        assert!(p.open_url("https://login.example/device", "open", T).is_ok());
    }
}
