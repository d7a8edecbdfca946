//! `dfs append` and `dfs records`: record append from the command line (SPEC "CLI contract").
//!
//! `append` creates the file when missing (atomically, never truncating an existing one) and
//! appends each input line, without its `\n`, as one record (`--whole`: the whole input as one
//! record). It exits 0 only when every record was acknowledged by every replica of its
//! chunk, fsynced. `records` prints each record once (duplicates left by retries and padding
//! are skipped), followed by `\n` (`-0`: NUL).

use std::io::Write;

use anyhow::Context;
use clap::Args;
use rdfs_client::{Client, DEFAULT_FILE_MODE};
use rdfs_proto::ErrorCode;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::format::dfs_path;

/// Input buffer of `dfs append`.
const INPUT_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// File to append to (created if missing, never truncated).
    path: String,
    /// Local file to read records from (default, or `-`: standard input).
    input: Option<String>,
    /// Append the whole input as one record instead of one record per line.
    #[arg(long)]
    whole: bool,
    /// Acknowledge records once every replica has them in memory, without waiting for fsync.
    #[arg(long)]
    no_sync: bool,
}

#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// File written by `dfs append` (or the record-append API).
    path: String,
    /// End each record with NUL instead of a newline.
    #[arg(short = '0', long = "null")]
    null: bool,
}

pub async fn append(client: &Client, args: AppendArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    match client.create(&path, DEFAULT_FILE_MODE, false).await {
        Ok(_) => {}
        Err(e) if e.code() == ErrorCode::AlreadyExists => {}
        Err(e) => return Err(anyhow::Error::new(e).context(path)),
    }
    let mut appender = client.appender(&path).await.with_context(|| path.clone())?;
    appender.set_sync(!args.no_sync);
    let input: Box<dyn AsyncRead + Unpin + Send> = match args.input.as_deref() {
        None | Some("-") => Box::new(tokio::io::stdin()),
        Some(local) => Box::new(
            tokio::fs::File::open(local)
                .await
                .with_context(|| local.to_string())?,
        ),
    };
    let max = appender.max_record_bytes();
    let mut input = BufReader::with_capacity(INPUT_BUFFER_BYTES, input);
    if args.whole {
        let mut all = Vec::new();
        // One byte more than allowed is enough to know it is too large.
        (&mut input)
            .take(max as u64 + 1)
            .read_to_end(&mut all)
            .await
            .context("reading input")?;
        appender.append(&all).await.with_context(|| path.clone())?;
        return Ok(());
    }
    let mut line = Vec::new();
    let mut number = 0u64;
    while next_line(&mut input, &mut line, max)
        .await
        .with_context(|| format!("{path}: input line {}", number + 1))?
    {
        number += 1;
        appender
            .append(&line)
            .await
            .with_context(|| format!("{path}: input line {number}"))?;
    }
    Ok(())
}

/// Reads the next line (without its `\n`) into `line`; false at the end of the input. A
/// line longer than `max` bytes is an error, found without buffering more than that.
async fn next_line<R: AsyncBufReadExt + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> anyhow::Result<bool> {
    line.clear();
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            anyhow::bail!("line longer than the {max}-byte record limit");
        }
        line.extend_from_slice(&buf[..take]);
        input.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

pub async fn records(client: &Client, args: RecordsArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    let mut reader = client
        .record_reader(&path)
        .await
        .with_context(|| path.clone())?;
    let end = if args.null { b'\0' } else { b'\n' };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(r) = reader.next().await.with_context(|| path.clone())? {
        out.write_all(&r.data)?;
        out.write_all(&[end])?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_without_newlines_and_long_ones_refused() {
        let mut input = BufReader::with_capacity(4, &b"ab\n\ncdefg\nhi"[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        while next_line(&mut input, &mut line, 8).await.expect("fits") {
            got.push(String::from_utf8(line.clone()).expect("utf8"));
        }
        assert_eq!(got, vec!["ab", "", "cdefg", "hi"]);
        let mut long = BufReader::with_capacity(4, &b"0123456789\n"[..]);
        let err = next_line(&mut long, &mut line, 8).await.unwrap_err();
        assert!(err.to_string().contains("8-byte"), "{err}");
    }
}
