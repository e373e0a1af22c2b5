use super::*;

/// The tenth and time of the last progress line after `done` bytes.
fn logged_after(reporter: &mut Reporter, done: u64, total: Option<u64>) -> Option<u8> {
    reporter.progress(done, total);
    reporter.progress_logged.map(|(tenth, _)| tenth)
}

#[test]
fn download_progress_is_logged_every_tenth_or_every_ten_seconds() {
    let mut reporter = Reporter::new(None);
    let total = Some(1000);
    assert_eq!(logged_after(&mut reporter, 50, total), Some(0));
    let at = reporter.progress_logged.map(|(_, at)| at);
    // Within the same tenth and the same ten seconds: no line.
    assert_eq!(logged_after(&mut reporter, 90, total), Some(0));
    assert_eq!(reporter.progress_logged.map(|(_, at)| at), at);
    // A new tenth: a line, however soon.
    assert_eq!(logged_after(&mut reporter, 120, total), Some(1));
    // Ten seconds in the same tenth: a line.
    let long_ago = Instant::now() - PROGRESS_EVERY - Duration::from_secs(1);
    reporter.progress_logged = Some((1, long_ago));
    logged_after(&mut reporter, 130, total);
    let since = reporter.progress_logged.map(|(_, at)| at.elapsed());
    assert!(since.is_some_and(|s| s < PROGRESS_EVERY));
    // No size: only time brings a line.
    let mut reporter = Reporter::new(None);
    assert_eq!(logged_after(&mut reporter, 10, None), Some(0));
    reporter.progress_logged = Some((0, long_ago));
    logged_after(&mut reporter, 5000, None);
    let since = reporter.progress_logged.map(|(_, at)| at.elapsed());
    assert!(since.is_some_and(|s| s < PROGRESS_EVERY));
}

#[test]
fn timestamps() {
    let table = [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_714_566_896, "2024-05-01T12:34:56Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ];
    for (secs, expected) in table {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), expected);
    }
}
