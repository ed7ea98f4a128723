//! The input line: editing, history and name completion, as in readline-based chat clients.
//!
//! The cursor counts `char`s, not bytes, so every edit lands on a character boundary; what
//! the line looks like on screen (wide characters, horizontal scrolling) is the view's job.

/// How many submitted lines Up/Down can recall.
pub const HISTORY_LINES: usize = 500;

/// An editable line with history.
#[derive(Debug, Default)]
pub struct LineEditor {
    chars: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// Position while browsing history (`history.len()` = the line being written), and that
    /// line, kept while browsing.
    browsing: Option<(usize, Vec<char>)>,
    completion: Option<Completion>,
}

/// A Tab completion in progress: pressing Tab again cycles through the candidates.
#[derive(Debug)]
struct Completion {
    /// Where the completed word starts.
    start: usize,
    candidates: Vec<String>,
    next: usize,
}

impl LineEditor {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    pub fn insert(&mut self, c: char) {
        self.edited();
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Inserts pasted text; line breaks become spaces (one message per Enter).
    pub fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\r' => {}
                '\n' | '\t' => self.insert(' '),
                c if c.is_control() => {}
                c => self.insert(c),
            }
        }
    }

    pub fn backspace(&mut self) {
        self.edited();
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    pub fn delete(&mut self) {
        self.edited();
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    pub fn left(&mut self) {
        self.completion = None;
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.completion = None;
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    pub fn home(&mut self) {
        self.completion = None;
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.completion = None;
        self.cursor = self.chars.len();
    }

    /// Moves to the start of the previous word (Ctrl-Left).
    pub fn word_left(&mut self) {
        self.completion = None;
        self.cursor = self.word_start();
    }

    /// Moves past the end of the next word (Ctrl-Right).
    pub fn word_right(&mut self) {
        self.completion = None;
        let n = self.chars.len();
        let mut i = self.cursor;
        while i < n && self.chars[i] == ' ' {
            i += 1;
        }
        while i < n && self.chars[i] != ' ' {
            i += 1;
        }
        self.cursor = i;
    }

    /// Ctrl-W: deletes the word before the cursor and the spaces after it.
    pub fn delete_word(&mut self) {
        self.edited();
        let start = self.word_start();
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.edited();
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Ctrl-K: deletes everything from the cursor on.
    pub fn delete_to_end(&mut self) {
        self.edited();
        self.chars.truncate(self.cursor);
    }

    /// Enter: returns the line and clears it; a non-blank line goes into the history.
    pub fn submit(&mut self) -> String {
        let line = self.text();
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        self.completion = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            if self.history.len() == HISTORY_LINES {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    /// Enter on a line that must not be remembered (a password): returns it and clears it,
    /// leaving the history as it was.
    pub fn submit_unrecorded(&mut self) -> String {
        let line = self.text();
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        self.completion = None;
        line
    }

    /// Up: the previous line from the history.
    pub fn history_up(&mut self) {
        self.completion = None;
        let (index, draft) = match self.browsing.take() {
            Some(b) => b,
            None => (self.history.len(), self.chars.clone()),
        };
        let index = index.saturating_sub(1);
        if let Some(line) = self.history.get(index) {
            self.chars = line.chars().collect();
            self.cursor = self.chars.len();
        }
        self.browsing = Some((index, draft));
    }

    /// Down: the next line from the history, and finally the line being written.
    pub fn history_down(&mut self) {
        self.completion = None;
        let Some((index, draft)) = self.browsing.take() else {
            return;
        };
        let index = index + 1;
        if let Some(line) = self.history.get(index) {
            self.chars = line.chars().collect();
            self.browsing = Some((index, draft));
        } else {
            self.chars = draft;
        }
        self.cursor = self.chars.len();
    }

    /// Tab: completes the word before the cursor with the first of `names` it begins, then
    /// with the next one on each further Tab. A leading `@` is kept (`@bo` → `@bob `).
    pub fn complete<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        if let Some(c) = &mut self.completion {
            if c.candidates.len() > 1 {
                let start = c.start;
                let next = c.candidates[c.next].clone();
                c.next = (c.next + 1) % c.candidates.len();
                self.replace_word(start, &next);
            }
            return;
        }
        let mut start = self.word_start_strict();
        if self.chars.get(start) == Some(&'@') {
            start += 1;
        }
        let prefix: String = self.chars[start..self.cursor].iter().collect();
        let mut candidates: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && !prefix.is_empty())
            .map(str::to_owned)
            .collect();
        candidates.sort();
        candidates.dedup();
        let Some(first) = candidates.first().cloned() else {
            return;
        };
        self.replace_word(start, &first);
        self.completion = Some(Completion {
            start,
            next: 1 % candidates.len(),
            candidates,
        });
    }

    fn replace_word(&mut self, start: usize, word: &str) {
        self.chars.drain(start..self.cursor);
        let mut inserted: Vec<char> = word.chars().collect();
        inserted.push(' ');
        let n = inserted.len();
        self.chars.splice(start..start, inserted);
        self.cursor = start + n;
    }

    /// Start of the word before the cursor, skipping spaces right before it.
    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.chars[i - 1] == ' ' {
            i -= 1;
        }
        while i > 0 && self.chars[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    /// Start of the word the cursor is in or right after (none if after a space).
    fn word_start_strict(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.chars[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    fn edited(&mut self) {
        self.completion = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(text: &str) -> LineEditor {
        let mut e = LineEditor::default();
        e.insert_str(text);
        e
    }

    #[test]
    fn editing_lands_on_characters_not_bytes() {
        let mut e = with("żółw🐢");
        e.left();
        e.insert('!');
        assert_eq!(e.text(), "żółw!🐢");
        e.home();
        e.delete();
        e.right();
        e.backspace();
        assert_eq!(e.text(), "łw!🐢");
        e.end();
        e.backspace();
        assert_eq!(e.text(), "łw!");
    }

    #[test]
    fn word_and_line_deletion() {
        let mut e = with("hello big  world  ");
        e.delete_word();
        assert_eq!(e.text(), "hello big  ");
        e.delete_word();
        assert_eq!(e.text(), "hello ");
        e.home();
        e.word_right();
        assert_eq!(e.cursor(), 5);
        e.delete_to_end();
        assert_eq!(e.text(), "hello");
        e.left();
        e.delete_to_start();
        assert_eq!((e.text().as_str(), e.cursor()), ("o", 0));
    }

    #[test]
    fn history_recalls_and_restores_the_draft() {
        let mut e = LineEditor::default();
        for line in ["one", "two", "  ", "two"] {
            e.insert_str(line);
            e.submit();
        }
        e.insert_str("draft");
        e.history_up();
        assert_eq!(e.text(), "two", "blank and repeated lines are not kept");
        e.history_up();
        assert_eq!(e.text(), "one");
        e.history_up();
        assert_eq!(e.text(), "one");
        e.history_down();
        assert_eq!(e.text(), "two");
        e.history_down();
        assert_eq!(e.text(), "draft");
        e.history_down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn tab_completes_and_cycles() {
        let names = ["bob", "bobby", "alice"];
        let mut e = with("@bo");
        e.complete(names);
        assert_eq!(e.text(), "@bob ");
        e.complete(names);
        assert_eq!(e.text(), "@bobby ");
        e.complete(names);
        assert_eq!(e.text(), "@bob ");
        e.insert_str("hi");
        assert_eq!(e.text(), "@bob hi");

        let mut e = with("/query al");
        e.complete(names);
        assert_eq!(e.text(), "/query alice ");

        let mut e = with("nobody matches zz");
        e.complete(names);
        assert_eq!(e.text(), "nobody matches zz");
        let mut e = with("after a space ");
        e.complete(names);
        assert_eq!(e.text(), "after a space ");
    }

    #[test]
    fn pasted_line_breaks_become_spaces() {
        let e = with("one\r\ntwo\tthree\u{1b}[31m");
        assert_eq!(e.text(), "one two three[31m");
    }
}
