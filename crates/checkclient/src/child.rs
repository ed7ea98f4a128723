//! The student's program: started on pipes or a pseudo-terminal, watched, and killed.
//!
//! Each case starts the program afresh in a process group of its own (a session, for a
//! pty), so that killing the group at the end of the case also kills whatever the program
//! started (a shell wrapper, `python3` under `sh -c`). A thread per output stream copies
//! what the program writes into a [`watch`] channel the cases wait on; a thread waits for
//! the exit status, which also reaps the process, so no case leaves a zombie behind.
//!
//! It is deliberately not `tokio::process`: the pty's master side is not a pipe, and one
//! mechanism (blocking reads on threads) serves both the pipes and the pty.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::watch;

/// How the program's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terminal {
    /// stdin, stdout and stderr are pipes: what `program < input | tee log` sees.
    #[default]
    Pipes,
    /// A pseudo-terminal with echo off: what a student's terminal gives, line-buffered
    /// output included.
    Pty,
}

/// Everything the program has written so far.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// stdout and stderr as they arrived (on a pty, the terminal's one stream).
    pub shown: Vec<u8>,
    /// stderr alone (empty on a pty, where it cannot be told apart).
    pub stderr: Vec<u8>,
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    fn of(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Why the program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot open a pseudo-terminal: {0}")]
    Pty(std::io::Error),
}

/// A running program. Dropping it kills its process group and reaps it.
pub struct Child {
    pid: i32,
    input: Option<File>,
    output: watch::Receiver<Output>,
    exit: watch::Receiver<Option<Exit>>,
    waiter: Option<std::thread::JoinHandle<()>>,
}

impl Child {
    /// Starts `argv[0]` with the rest as arguments, `env` added to the environment.
    ///
    /// # Errors
    /// When the program cannot be started, or no pty can be had.
    pub fn spawn(
        argv: &[String],
        env: &[(String, String)],
        terminal: Terminal,
    ) -> Result<Self, SpawnError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(SpawnError::Start {
                program: String::new(),
                source: std::io::Error::other("no program given"),
            });
        };
        let mut command = Command::new(program);
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let start_error = |source| SpawnError::Start {
            program: program.clone(),
            source,
        };
        let (output_tx, output) = watch::channel(Output::default());
        let (input, mut child) = match terminal {
            Terminal::Pipes => {
                command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0);
                let mut child = command.spawn().map_err(start_error)?;
                let input = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
                if let Some(out) = child.stdout.take() {
                    copy_into(out, output_tx.clone(), false);
                }
                if let Some(err) = child.stderr.take() {
                    copy_into(err, output_tx, true);
                }
                (input, child)
            }
            Terminal::Pty => {
                let (master, slave) = open_pty().map_err(SpawnError::Pty)?;
                let dup = |fd: &OwnedFd| fd.try_clone().map_err(SpawnError::Pty);
                command
                    .stdin(Stdio::from(dup(&slave)?))
                    .stdout(Stdio::from(dup(&slave)?))
                    .stderr(Stdio::from(slave));
                // SAFETY: between fork and exec only async-signal-safe calls are made
                // (setsid, ioctl), on the child's own copy of the descriptors.
                unsafe {
                    command.pre_exec(|| {
                        // A session of its own: the pty becomes its controlling terminal, and
                        // the session is also the process group the end of a case kills.
                        if libc::setsid() < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let child = command.spawn().map_err(start_error)?;
                // `command` still holds the slave's copies; dropping it closes them, so the
                // master reads end (EIO) once the program is gone.
                drop(command);
                let reader = master.try_clone().map_err(SpawnError::Pty)?;
                copy_into(File::from(reader), output_tx, false);
                (Some(File::from(master)), child)
            }
        };
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let (exit_tx, exit) = watch::channel(None);
        let waiter = std::thread::spawn(move || {
            let status = child.wait().map(Exit::of).unwrap_or(Exit::Code(-1));
            exit_tx.send_replace(Some(status));
        });
        Ok(Self {
            pid,
            input,
            output,
            exit,
            waiter: Some(waiter),
        })
    }

    /// Types `line` and a newline on the program's input. A program that closed its input
    /// (or exited) is not an error here: the case notices from what it does next.
    pub fn type_line(&mut self, line: &str) {
        if let Some(input) = &mut self.input {
            let mut bytes = line.as_bytes().to_vec();
            bytes.push(b'\n');
            if input
                .write_all(&bytes)
                .and_then(|()| input.flush())
                .is_err()
            {
                self.input = None;
            }
        }
    }

    /// What the program has written so far.
    pub fn output(&self) -> Output {
        self.output.borrow().clone()
    }

    /// How many bytes it has shown so far: a mark to wait for what comes after.
    pub fn shown_len(&self) -> usize {
        self.output.borrow().shown.len()
    }

    /// Waits up to `wait` until what the program showed after byte `from` satisfies `want`;
    /// true if it did.
    pub async fn wait_shown(
        &self,
        from: usize,
        wait: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let mut rx = self.output.clone();
        tokio::time::timeout(
            wait,
            rx.wait_for(|o| want(o.shown.get(from..).unwrap_or_default())),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// A receiver of the exit status, for a `select!` beside other waits.
    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// How it ended, if it has.
    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits up to `wait` for the program to end.
    pub async fn wait_exit(&self, wait: Duration) -> Option<Exit> {
        let mut rx = self.exit.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        let exit = *rx.borrow();
        exit
    }

    /// Kills the whole process group and waits for the program to be reaped.
    pub fn kill(&mut self) {
        self.input = None;
        if self.exited().is_none() {
            // SAFETY: kill(2) with a negative pid signals the process group the child leads
            // (it was made its leader at spawn); no memory is involved.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
            }
        }
        if let Some(waiter) = self.waiter.take() {
            // The program is dead or dying (SIGKILL cannot be caught), so this returns.
            let _ = waiter.join();
        }
        // Whatever else the program left in its group goes too (it may have exited first).
        // SAFETY: as above.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies everything `from` yields into the channel, on a thread of its own, until the end
/// of the stream (or an error: EIO is how a pty says the program is gone).
fn copy_into(mut from: impl Read + Send + 'static, to: watch::Sender<Output>, stderr: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    to.send_modify(|o| {
                        o.shown.extend_from_slice(&buf[..n]);
                        if stderr {
                            o.stderr.extend_from_slice(&buf[..n]);
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

/// Opens a pty pair with echo off, so what the checker types is not mistaken for what the
/// program shows.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    // SAFETY: openpty writes two descriptors into the given integers; the name, termios and
    // window-size arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors this process now owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: termios is plain data; tcgetattr fills it for an open terminal descriptor.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) == 0 {
            t.c_lflag &= !(libc::ECHO | libc::ECHONL);
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    Ok((master, slave))
}
