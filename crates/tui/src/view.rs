//! Drawing: the [`App`] as a screen, nothing else.
//!
//! ```text
//!  1 status      │12:01 -!- logged in as alice                 │ online (2)
//!  2 bob         │12:02 <alice> hi bob ✓                        │ alice
//!  3 carol (1)   │12:02 <bob> hello!                            │ bob
//!  localhost:5378 │ alice │ online                                 [2] bob
//! [bob] how are you_
//! ```
//!
//! A message that arrives in another conversation is named on the status line (`[3] carol:
//! psst`) until that conversation is opened, besides its unread count.
//!
//! Narrow terminals drop the online list first, then the conversation list. Text is wrapped
//! by display width (wide CJK and emoji take two columns), and control characters from the
//! network are replaced, so a peer cannot send escape sequences to our terminal.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;
use tcpchat_client::{Delivery, EntryKind, Older, Phase, Target, HELP, NAME_RULES};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::App;

/// Terminals at least this wide show the online list on the right.
const WIDE_COLUMNS: u16 = 72;
/// Terminals at least this wide show the conversation list on the left.
const MEDIUM_COLUMNS: u16 = 48;
const SIDE_COLUMNS: u16 = 16;

/// The keys, for the help overlay.
const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the line"),
    ("Tab", "complete a user name or command"),
    ("Up / Down", "recall earlier lines"),
    ("PgUp / PgDn", "scroll the conversation"),
    ("Ctrl-N / Ctrl-P", "next / previous conversation"),
    ("Alt-1 .. Alt-9", "go to conversation 1 .. 9"),
    ("Ctrl-W Ctrl-U Ctrl-K", "delete word / to start / to end"),
    ("Ctrl-C", "quit"),
    ("F1", "this help"),
];

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.height < 3 || area.width < 8 {
        frame.render_widget(Paragraph::new("tcpchat: terminal too small"), area);
        return;
    }
    let [main, status, input] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    let mut middle = main;
    if area.width >= MEDIUM_COLUMNS {
        let [left, rest] =
            Layout::horizontal([Constraint::Length(SIDE_COLUMNS), Constraint::Min(1)]).areas(main);
        render_conversations(app, frame, left);
        middle = rest;
    }
    if area.width >= WIDE_COLUMNS {
        let [rest, right] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(SIDE_COLUMNS)])
                .areas(middle);
        render_online(app, frame, right);
        middle = rest;
    }
    render_messages(app, frame, middle);
    render_status(app, frame, status, area.width < MEDIUM_COLUMNS);
    render_input(app, frame, input);
    if app.help {
        render_help(frame, area);
    }
}

fn render_conversations(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new().borders(Borders::RIGHT).border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let client = app.client();
    let lines: Vec<Line> = client
        .buffers()
        .iter()
        .enumerate()
        .map(|(i, buffer)| {
            let name = match &buffer.target {
                Target::Status => "status",
                Target::Peer(peer) => peer.as_str(),
                Target::Room(room) => room.as_str(),
            };
            let unread = if buffer.unread > 0 {
                format!(" ({})", buffer.unread)
            } else {
                String::new()
            };
            let number = format!("{:>2} ", i + 1);
            let room = width.saturating_sub(number.width() + unread.width());
            let text = format!("{number}{}{unread}", truncate(name, room));
            let style = if i == client.open_index() {
                Style::new().add_modifier(Modifier::REVERSED)
            } else if buffer.unread > 0 {
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            Line::styled(pad(&text, width), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn render_online(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new().borders(Borders::LEFT).border_style(dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let client = app.client();
    let mut lines = Vec::new();
    // In a room, its members (the owner first) instead of everyone online.
    if let Target::Room(_) = &client.open_buffer().target {
        let members = &client.open_buffer().members;
        lines.push(Line::styled(
            truncate(&format!(" members ({})", members.len()), width),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        for name in members {
            let style = if Some(name) == client.name() {
                Style::new().fg(Color::Green)
            } else {
                Style::new()
            };
            lines.push(Line::styled(truncate(&format!(" {name}"), width), style));
        }
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    }
    match client.online() {
        Some(names) => {
            lines.push(Line::styled(
                truncate(&format!(" online ({})", names.len()), width),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            for name in names {
                let style = if Some(name) == client.name() {
                    Style::new().fg(Color::Green)
                } else {
                    Style::new()
                };
                lines.push(Line::styled(truncate(&format!(" {name}"), width), style));
            }
        }
        None => lines.push(Line::styled(truncate(" online", width), dim())),
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// A room's header: its name, how many are in it, its topic.
fn room_header(buffer: &tcpchat_client::Buffer, width: usize) -> Option<Line<'static>> {
    let Target::Room(room) = &buffer.target else {
        return None;
    };
    let count = match buffer.members.len() {
        0 => "not joined".to_owned(),
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    let topic = match &buffer.topic {
        Some(topic) => format!(" │ {}", clean(topic)),
        None => " │ no topic".to_owned(),
    };
    let text = truncate(&format!(" {room} │ {count}{topic}"), width);
    Some(Line::styled(
        pad(&text, width),
        Style::new().fg(Color::White).bg(Color::DarkGray),
    ))
}

fn render_messages(app: &App, frame: &mut Frame, area: Rect) {
    let client = app.client();
    let buffer = client.open_buffer();
    let mut area = area;
    if let Some(header) = room_header(buffer, area.width as usize) {
        if area.height >= 2 {
            let [top, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
            frame.render_widget(Paragraph::new(header), top);
            area = rest;
        }
    }
    let width = area.width as usize;
    let height = area.height as usize;
    app.page.set(height);
    if buffer.entries.is_empty() {
        let hint = match (&buffer.target, client.phase()) {
            (_, Phase::NeedName(_)) => {
                format!("Welcome to tcpchat. Type the name you want to use and press Enter ({NAME_RULES}).")
            }
            (Target::Status, _) => {
                "Type @user message to chat with someone, !who to see who is online, /help for more.".to_owned()
            }
            (Target::Peer(peer), _) => format!("No messages with {peer} yet."),
            (Target::Room(room), _) => format!(
                "No messages in {room} yet. /members, /topic text, /part to leave."
            ),
        };
        let lines = wrap(vec![Span::styled(hint, dim())], width, 0);
        frame.render_widget(Paragraph::new(lines), area);
        app.max_scroll.set(0);
        return;
    }
    // Wrap from the newest entry back, only as far as the screen (plus a page) needs.
    let want = height + app.scroll.get() + height;
    let mut rows: Vec<Line> = Vec::new();
    let mut exhausted = true;
    for entry in buffer.entries.iter().rev() {
        if rows.len() >= want {
            exhausted = false;
            break;
        }
        let time = match entry.stamp {
            Some(stamp) => app.clock.server_hh_mm(stamp.time),
            None => app.clock.hh_mm(entry.at),
        };
        let mut lines = wrap(
            entry_spans(app, &time, &entry.kind),
            width,
            6.min(width / 2),
        );
        lines.reverse();
        rows.extend(lines);
    }
    if exhausted {
        // The top of what is held: is there more on the server?
        let mark = match buffer.older {
            Older::Loading => Some("loading older…"),
            Older::Beginning => Some("— beginning of history —"),
            Older::Unknown => None,
        };
        if let Some(mark) = mark {
            rows.push(Line::from(Span::styled(mark.to_owned(), dim())));
        }
    }
    rows.reverse();
    let total = rows.len();
    let max_scroll = total.saturating_sub(height);
    app.max_scroll
        .set(if exhausted { max_scroll } else { usize::MAX });
    let scroll = app.scroll.get().min(max_scroll);
    app.scroll.set(scroll);
    let start = total.saturating_sub(height + scroll);
    let end = (start + height).min(total);
    let visible: Vec<Line> = rows.drain(start..end).collect();
    frame.render_widget(Paragraph::new(visible), area);
}

fn entry_spans(app: &App, time: &str, kind: &EntryKind) -> Vec<Span<'static>> {
    let mut spans = vec![Span::styled(format!("{time} "), dim())];
    match kind {
        EntryKind::Incoming { from, text } => {
            let nick = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
            spans.push(Span::styled(format!("<{from}>"), nick));
            spans.push(Span::raw(format!(" {}", clean(text))));
        }
        EntryKind::Outgoing { text, state, .. } => {
            let me = app
                .client()
                .name()
                .map_or_else(|| "me".to_owned(), |n| n.to_string());
            let nick = Style::new().fg(Color::Green).add_modifier(Modifier::BOLD);
            spans.push(Span::styled(format!("<{me}>"), nick));
            spans.push(Span::raw(format!(" {}", clean(text))));
            spans.push(match state {
                Delivery::Queued => Span::styled(" (waiting for the connection…)", dim()),
                Delivery::Sending => Span::styled(" (sending…)", dim()),
                Delivery::Delivered => Span::styled(" ✓", Style::new().fg(Color::Green)),
                Delivery::Kept => Span::styled(
                    " (queued: delivered at their next login)",
                    Style::new().fg(Color::Yellow),
                ),
                Delivery::NotDelivered(why) => Span::styled(
                    format!(" ✗ not delivered: {why}"),
                    Style::new().fg(Color::Red),
                ),
            });
        }
        EntryKind::Notice(text) => {
            spans.push(Span::styled("-!- ", Style::new().fg(Color::Yellow)));
            spans.push(Span::styled(clean(text), Style::new().fg(Color::Yellow)));
        }
    }
    spans
}

fn render_status(app: &App, frame: &mut Frame, area: Rect, show_conversation: bool) {
    let client = app.client();
    let state = if client.is_quitting() {
        "leaving…".to_owned()
    } else {
        match client.phase() {
            Phase::NeedName(_) => "choose a name".to_owned(),
            Phase::NeedPassword(name) => format!("password for {name}"),
            Phase::Connecting => "connecting…".to_owned(),
            Phase::LoggingIn => "logging in…".to_owned(),
            Phase::Online => "online".to_owned(),
            Phase::Waiting { until, reason } => {
                let left = until.saturating_duration_since(app.now);
                format!(
                    "offline, retrying in {}s: {reason}",
                    left.as_secs_f32().ceil()
                )
            }
            Phase::Done => "disconnected".to_owned(),
        }
    };
    let name = client.name().map_or("?", |n| n.as_str());
    let width = area.width as usize;
    let mut right = String::new();
    // A message elsewhere is seen at once, with where to find it (Alt-N). See: #11
    if let Some(arrival) = client.conversations().arrival() {
        let number = client
            .buffers()
            .iter()
            .position(|b| b.target == Target::Peer(arrival.from.clone()))
            .map_or_else(String::new, |i| format!("[{}] ", i + 1));
        let note = format!("{number}{}: {}", arrival.from, clean(&arrival.preview));
        right.push_str(&truncate(&note, width / 2));
        right.push_str(" │ ");
    }
    if app.scroll.get() > 0 {
        right.push_str("more below: PgDn │ ");
    }
    if show_conversation {
        let open = match &client.open_buffer().target {
            Target::Status => "status",
            Target::Peer(p) => p.as_str(),
            Target::Room(r) => r.as_str(),
        };
        right.push_str(&format!("[{}] {open} │ ", client.open_index() + 1));
    }
    right.push_str("F1 help ");
    let room = width.saturating_sub(right.width() + 1);
    // The server is the first thing to go when the line is short.
    let full = format!(" {} │ {name} │ {state}", app.server);
    let left = if full.width() <= room {
        full
    } else {
        truncate(&format!(" {name} │ {state}"), room)
    };
    let gap = width.saturating_sub(left.width() + right.width());
    let text = format!("{left}{}{right}", " ".repeat(gap));
    let style = match client.phase() {
        Phase::Online => Style::new().fg(Color::White).bg(Color::Blue),
        _ => Style::new().fg(Color::Black).bg(Color::Yellow),
    };
    frame.render_widget(
        Paragraph::new(Line::styled(truncate(&text, width), style)),
        area,
    );
}

fn render_input(app: &App, frame: &mut Frame, area: Rect) {
    let client = app.client();
    // A password is drawn as one `*` per character, never as itself. See: #13
    let secret = client.password_prompt();
    let prompt = match (client.phase(), &client.open_buffer().target) {
        _ if secret.is_some() => secret
            .as_ref()
            .map_or_else(String::new, |p| format!("{p}: ")),
        (Phase::NeedName(_), _) => "name: ".to_owned(),
        (_, Target::Status) => "[status] ".to_owned(),
        (_, Target::Peer(p)) => format!("[{p}] "),
        (_, Target::Room(r)) => format!("[{r}] "),
    };
    let width = area.width as usize;
    let prompt = truncate(&prompt, width / 2);
    let room = width.saturating_sub(prompt.width() + 1).max(1);
    let masked: Vec<char>;
    let chars = if secret.is_some() {
        masked = vec!['*'; app.input.chars().len()];
        &masked[..]
    } else {
        app.input.chars()
    };
    let cursor = app.input.cursor();
    // Scroll horizontally so that the cursor stays on screen.
    let mut start = 0;
    let cols = |range: &[char]| -> usize { range.iter().map(|c| c.width().unwrap_or(0)).sum() };
    while cols(&chars[start..cursor]) > room {
        start += 1;
    }
    let mut shown = String::new();
    let mut used = 0;
    for c in &chars[start..] {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        shown.push(*c);
        used += w;
    }
    let line = Line::from(vec![
        Span::styled(prompt.clone(), Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(shown),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let x = area.x as usize + prompt.width() + cols(&chars[start..cursor]);
    frame.set_cursor_position(Position::new(
        x.min(area.right().saturating_sub(1) as usize) as u16,
        area.y,
    ));
}

fn render_help(frame: &mut Frame, area: Rect) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut commands = vec![Line::styled("Commands", bold)];
    for (usage, what) in HELP {
        commands.push(Line::from(format!("  {usage:<16} {what}")));
    }
    let mut keys = vec![Line::styled("Keys", bold)];
    for (key, what) in KEYS {
        keys.push(Line::from(format!("  {key:<21} {what}")));
    }
    let widest = |lines: &[Line]| lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    // Stacked when the screen is tall enough, side by side when it is not but wide enough.
    let stacked_height = (commands.len() + 1 + keys.len()) as u16 + 2;
    let side_width = widest(&commands) + widest(&keys) + 5;
    let side_by_side = stacked_height > area.height && side_width <= area.width;
    let (width, height) = if side_by_side {
        (side_width, commands.len().max(keys.len()) as u16 + 2)
    } else {
        (widest(&commands).max(widest(&keys)) + 4, stacked_height)
    };
    let (width, height) = (width.min(area.width), height.min(area.height));
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let block = Block::bordered().title(" help · Esc closes ");
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    if side_by_side {
        let [left, right] = Layout::horizontal([
            Constraint::Length(widest(&commands) + 2),
            Constraint::Min(1),
        ])
        .areas(inner);
        frame.render_widget(Paragraph::new(commands), left);
        frame.render_widget(Paragraph::new(keys), right);
    } else {
        commands.push(Line::raw(""));
        commands.extend(keys);
        frame.render_widget(Paragraph::new(commands), inner);
    }
}

/// Replaces control characters (a peer's escape sequences must not reach our terminal).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// At most `width` columns of `text`, cut on a character boundary.
fn truncate(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out
}

fn pad(text: &str, width: usize) -> String {
    let w = text.width();
    format!("{text}{}", " ".repeat(width.saturating_sub(w)))
}

/// Wraps styled text into lines of at most `width` columns, breaking at spaces where it can
/// and inside words where it must; continuation lines are indented by `indent` columns.
fn wrap(spans: Vec<Span<'static>>, width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = indent.min(width / 2);
    let mut rows = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    let mut new_row = |row: &mut Vec<Span<'static>>, used: &mut usize| {
        rows.push(Line::from(std::mem::take(row)));
        if indent > 0 {
            row.push(Span::raw(" ".repeat(indent)));
        }
        *used = indent;
    };
    for span in spans {
        let style = span.style;
        for token in tokens(&span.content) {
            let w = token.width();
            if used + w <= width {
                row.push(Span::styled(token.to_owned(), style));
                used += w;
            } else if token.starts_with(' ') {
                new_row(&mut row, &mut used);
            } else if w <= width - indent && used > indent {
                new_row(&mut row, &mut used);
                row.push(Span::styled(token.to_owned(), style));
                used += w;
            } else {
                for c in token.chars() {
                    let cw = c.width().unwrap_or(0);
                    if used + cw > width && used > indent {
                        new_row(&mut row, &mut used);
                    }
                    row.push(Span::styled(c.to_string(), style));
                    used += cw;
                }
            }
        }
    }
    rows.push(Line::from(row));
    rows
}

/// Runs of spaces and runs of everything else, in order.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = None;
    for (i, c) in text.char_indices() {
        let space = c == ' ';
        if in_space.is_some_and(|s| s != space) {
            out.push(&text[start..i]);
            start = i;
        }
        in_space = Some(space);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}
