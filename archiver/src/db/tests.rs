//! The database layer against real databases: a SQLite file, and a private
//! PostgreSQL server started for the test when PostgreSQL is installed (or
//! the one `IM_ARCHIVER_TEST_PG` names).

use super::*;
use crate::testpg::TestPostgres;

fn msg(user: &[u8], seq: i64, ts: i64) -> Message {
    Message {
        user: user.to_vec(),
        seq,
        id: format!("id-{seq}").into_bytes(),
        ts,
        stanza: format!("<message id='id-{seq}'><body>{seq}</body></message>").into_bytes(),
        devices: vec![b"phone".to_vec()],
    }
}

fn seqs(ms: &[Message]) -> Vec<i64> {
    ms.iter().map(|m| m.seq).collect()
}

/// Everything the trait promises, on an empty archive.
fn suite(db: &mut dyn Archive) {
    assert_eq!(db.count().unwrap(), 0);

    // A batch, then the same batch again (an archiver that stopped between
    // commit and ack): one row per message.
    let batch: Vec<Message> = (1..=50)
        .map(|i| msg(b"alice", 1000 + i, 10_000 + i))
        .collect();
    assert_eq!(db.write_batch(&batch, 1).unwrap(), 50);
    assert_eq!(db.write_batch(&batch[10..20], 2).unwrap(), 10);
    assert_eq!(db.count().unwrap(), 50);

    // Binary-safe users, ids, devices and stanzas.
    let odd_user = b"b\xff\x00ob@example.com".to_vec();
    let odd = Message {
        user: odd_user.clone(),
        seq: i64::MAX - 1,
        id: b"\x00\xfe\xff".to_vec(),
        ts: 5,
        stanza: b"<message>\xc3\xa9\x00</message>".to_vec(),
        devices: vec![
            b"\xfftab".to_vec(),
            "t\u{e9}l\u{e9}phone".as_bytes().to_vec(),
            vec![],
        ],
    };
    assert_eq!(db.write_batch(std::slice::from_ref(&odd), 3).unwrap(), 1);
    assert_eq!(
        db.restorable(&odd_user, false, None).unwrap(),
        vec![odd.clone()]
    );
    let h = db.history(&odd_user, HistoryRange::default()).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].message.clone(), h[0].archived_at, h[0].restored_at),
        (odd, 3, None)
    );

    // The same message twice in one batch: one row, the last copy.
    let mut twice = vec![msg(b"carol", 7, 70), msg(b"carol", 7, 70)];
    twice[1].devices = vec![b"laptop".to_vec()];
    db.write_batch(&twice, 4).unwrap();
    let carol = db.restorable(b"carol", false, None).unwrap();
    assert_eq!(carol, vec![twice[1].clone()]);
    assert_eq!(db.count().unwrap(), 52);

    // Restorable rows in seq order; the newest n.
    let all = db.restorable(b"alice", false, None).unwrap();
    assert_eq!(seqs(&all), (1001..=1050).collect::<Vec<_>>());
    assert_eq!(all[0], batch[0]);
    let newest = db.restorable(b"alice", false, Some(5)).unwrap();
    assert_eq!(seqs(&newest), (1046..=1050).collect::<Vec<_>>());
    assert!(db.restorable(b"alice", false, Some(0)).unwrap().is_empty());
    assert!(db.restorable(b"nobody", false, None).unwrap().is_empty());

    // Restored rows are left out until archived again.
    let first: Vec<i64> = (1001..=1030).collect();
    db.mark_restored(b"alice", &first, 99).unwrap();
    assert_eq!(
        seqs(&db.restorable(b"alice", false, None).unwrap()),
        (1031..=1050).collect::<Vec<_>>()
    );
    assert_eq!(db.restorable(b"alice", true, None).unwrap().len(), 50);
    assert_eq!(
        seqs(&db.restorable(b"alice", true, Some(2)).unwrap()),
        vec![1049, 1050]
    );
    let h = db.history(b"alice", HistoryRange::default()).unwrap();
    assert_eq!(h[0].restored_at, Some(99));
    assert_eq!(h[40].restored_at, None);
    db.write_batch(&batch[0..5], 100).unwrap();
    assert_eq!(db.restorable(b"alice", false, None).unwrap().len(), 25);
    let h = db.history(b"alice", HistoryRange::default()).unwrap();
    assert_eq!((h[0].archived_at, h[0].restored_at), (100, None));

    // History in time order (ts, then seq), with since, until and limit.
    let late_low_seq = msg(b"dave", 1, 300);
    let early_high_seq = msg(b"dave", 2, 100);
    let same_ts = msg(b"dave", 3, 100);
    db.write_batch(&[late_low_seq, early_high_seq, same_ts], 5)
        .unwrap();
    let mut order = |r: HistoryRange| -> Vec<i64> {
        db.history(b"dave", r)
            .unwrap()
            .iter()
            .map(|r| r.message.seq)
            .collect()
    };
    assert_eq!(order(HistoryRange::default()), vec![2, 3, 1]);
    assert_eq!(
        order(HistoryRange {
            since: Some(101),
            ..Default::default()
        }),
        vec![1]
    );
    assert_eq!(
        order(HistoryRange {
            until: Some(100),
            ..Default::default()
        }),
        vec![2, 3]
    );
    assert_eq!(
        order(HistoryRange {
            limit: Some(2),
            ..Default::default()
        }),
        vec![2, 3]
    );
    assert_eq!(
        order(HistoryRange {
            since: Some(100),
            until: Some(300),
            limit: Some(0)
        }),
        Vec::<i64>::new()
    );
    assert_eq!(db.count().unwrap(), 55);

    // A large batch in one transaction.
    let big: Vec<Message> = (0..2000)
        .map(|i| msg(format!("u{}", i % 37).as_bytes(), i, i))
        .collect();
    assert_eq!(db.write_batch(&big, 6).unwrap(), 2000);
    assert_eq!(db.count().unwrap(), 2055);
    assert_eq!(db.write_batch(&[], 7).unwrap(), 0);
}

#[test]
fn sqlite_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.sqlite3");
    let url = DbUrl::parse(&format!("sqlite://{}", path.display())).unwrap();
    let mut db = url.open().unwrap();
    suite(db.as_mut());
    // The rows are on disk: a second connection sees them, and opening an
    // existing archive keeps it.
    drop(db);
    let mut again = url.open().unwrap();
    assert_eq!(again.count().unwrap(), 2055);
}

#[test]
fn postgres_archive() {
    let Some(pg) = TestPostgres::start() else {
        eprintln!("PostgreSQL not installed: postgres_archive skipped");
        return;
    };
    let url = DbUrl::parse(&pg.url("archive_test")).unwrap();
    let mut db = url.open().unwrap();
    suite(db.as_mut());
    drop(db);
    // Opening again (the table exists) keeps the rows.
    let mut again = url.open().unwrap();
    assert_eq!(again.count().unwrap(), 2055);
}

#[test]
fn urls() {
    assert_eq!(
        DbUrl::parse("im.db").unwrap(),
        DbUrl::Sqlite("im.db".into())
    );
    assert_eq!(
        DbUrl::parse("sqlite:///var/im.db").unwrap(),
        DbUrl::Sqlite("/var/im.db".into())
    );
    assert_eq!(
        DbUrl::parse("sqlite://rel/im.db").unwrap(),
        DbUrl::Sqlite("rel/im.db".into())
    );
    assert_eq!(
        DbUrl::parse("sqlite:im.db").unwrap(),
        DbUrl::Sqlite("im.db".into())
    );
    assert_eq!(
        DbUrl::parse("postgres://u:p@h/db").unwrap(),
        DbUrl::Postgres("postgres://u:p@h/db".into())
    );
    assert!(matches!(
        DbUrl::parse("postgresql://h/db").unwrap(),
        DbUrl::Postgres(_)
    ));
    assert!(DbUrl::parse("mysql://h/db").is_err());
    assert!(DbUrl::parse("sqlite://").is_err());
    assert_eq!(
        DbUrl::parse("postgres://u:secret@h:5432/db")
            .unwrap()
            .display(),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(
        DbUrl::parse("postgres://h/db").unwrap().display(),
        "postgres://h/db"
    );
    assert!(DbUrl::parse("x.db")
        .unwrap()
        .schema()
        .contains("WITHOUT ROWID"));
    assert!(DbUrl::parse("postgres://h/db")
        .unwrap()
        .schema()
        .contains("BYTEA"));
}

#[test]
fn devices_column() {
    let devices = vec![
        b"phone".to_vec(),
        b"\xff\x00".to_vec(),
        "\u{1f600}".as_bytes().to_vec(),
    ];
    let json = devices_to_json(&devices);
    assert_eq!(json, r#"["phone",{"base64":"/wA="},"😀"]"#);
    assert_eq!(devices_from_json(&json).unwrap(), devices);
    assert_eq!(devices_from_json("[]").unwrap(), Vec::<Vec<u8>>::new());
    assert!(devices_from_json("{}").is_err());
    assert!(devices_from_json("[1]").is_err());
}
