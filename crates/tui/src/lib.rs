//! The full-screen terminal client: a ratatui view over [`tcpchat_client::Client`].
//!
//! This crate is only a view and a keyboard. The session logic (login, delivery states,
//! reconnection) is the client machine's; [`App`] adds what exists only on a screen (the input
//! line with its history, scrolling, the help overlay), [`view::render`] draws it, and [`run`]
//! is one `select!` over key presses, the connection, the machine's timer and a one-second
//! tick for the countdowns. Nothing here prints a protocol line.
//!
//! The terminal is restored however the program ends: normally, on error, on Ctrl-C (a key
//! press in raw mode, handled as `/quit`), on SIGTERM, and on panic (ratatui's panic hook).

mod app;
mod editor;
pub mod view;

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use tcpchat_client::net::{self, Link, Server};
use tcpchat_client::{Config, LoginError};

pub use app::{App, Clock};
pub use editor::LineEditor;

/// Why the UI stopped without the user asking.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Runs the full-screen client against `server` until the user quits.
///
/// # Errors
/// [`TuiError::Terminal`] when the terminal cannot be set up, drawn to or read from.
/// [`TuiError::Login`] only for a session that is not [`Config::interactive`].
pub async fn run(server: &Server, config: Config) -> Result<(), TuiError> {
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(err) => {
            // Raw mode may be on already even though the rest failed.
            ratatui::restore();
            return Err(err.into());
        }
    };
    let result = event_loop(&mut terminal, server, config).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    server: &Server,
    config: Config,
) -> Result<(), TuiError> {
    let (mut keeper, restored, warning) =
        tcpchat_client::state::for_config(&config, &server.to_string());
    let mut app = App::new(server.to_string(), config, Clock::local());
    if let Some(restored) = restored {
        app.client_mut().restore(restored);
    }
    if let Some(warning) = warning {
        app.client_mut().status_notice(&warning, Instant::now());
    }
    let mut link = Link::new(server.clone());
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut terminate = terminate_signal();
    let effects = app.start(Instant::now());
    link.apply(effects);
    loop {
        terminal.draw(|frame| view::render(&app, frame))?;
        if let Some(keeper) = keeper.as_mut() {
            let last_call = app.client().phase() == &tcpchat_client::Phase::Done;
            if let Some(warning) = keeper.update(app.client(), Instant::now(), last_call) {
                app.client_mut().status_notice(&warning, Instant::now());
            }
        }
        if let Some(exit) = app.take_exit() {
            return exit.map_err(TuiError::Login);
        }
        let deadline = app.client().poll_timeout();
        let effects = tokio::select! {
            event = keys.next() => match event {
                Some(Ok(TermEvent::Key(key))) if key.kind != KeyEventKind::Release => {
                    app.handle_key(key, Instant::now())
                }
                Some(Ok(TermEvent::Paste(text))) => {
                    app.handle_paste(&text);
                    Vec::new()
                }
                Some(Ok(_)) => Vec::new(),
                Some(Err(err)) => return Err(TuiError::Terminal(err)),
                // The terminal is gone: nobody to show anything to.
                None => return Ok(()),
            },
            event = link.next() => app.handle_net(event, Instant::now()),
            () = net::sleep_until(deadline) => app.handle_timeout(Instant::now()),
            _ = tick.tick() => app.handle_timeout(Instant::now()),
            () = &mut terminate => {
                if let Some(keeper) = keeper.as_mut() {
                    keeper.update(app.client(), Instant::now(), true);
                }
                return Ok(());
            }
        };
        link.apply(effects);
    }
}

/// Completes on SIGTERM or SIGHUP (never elsewhere), so that the terminal is restored.
fn terminate_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let hup = signal(SignalKind::hangup());
        if let (Ok(mut term), Ok(mut hup)) = (term, hup) {
            return Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            });
        }
    }
    Box::pin(std::future::pending())
}
