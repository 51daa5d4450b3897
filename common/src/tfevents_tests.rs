use super::*;

#[test]
fn crc32c_matches_the_published_check_values() {
    // RFC 3720 (iSCSI) B.4 and the usual "123456789" check value of CRC-32C.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0u8..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
}

#[test]
fn an_event_encodes_to_the_protobuf_bytes_by_hand() {
    let event = Event::scalars(1.0, 2, vec![("a".into(), 0.5)]);
    let expected: Vec<u8> = [
        &[0x09][..],
        &1.0f64.to_le_bytes(),
        &[0x10, 0x02],
        &[0x2A, 0x0A],       // summary, 10 bytes
        &[0x0A, 0x08],       // value, 8 bytes
        &[0x0A, 0x01, b'a'], // tag
        &[0x15],             // simple_value, fixed32
        &0.5f32.to_le_bytes(),
    ]
    .concat();
    assert_eq!(encode(&event), expected);
    assert_eq!(decode(&expected).unwrap(), event);
}

#[test]
fn records_round_trip_and_a_flipped_byte_is_caught() {
    let events = vec![
        Event::version(5.0),
        Event::scalars(6.5, 10, vec![("train/loss".into(), 1.25), ("train/accuracy".into(), 0.75)]),
        Event::scalars(7.5, 20, vec![("train/loss".into(), 0.5)]),
    ];
    let bytes: Vec<u8> = events.iter().flat_map(|e| frame(&encode(e))).collect();
    let (recs, damage) = records(&bytes);
    assert_eq!(damage, None);
    let back: Vec<Event> = recs.into_iter().map(|r| decode(r).unwrap()).collect();
    assert_eq!(back, events);

    for at in [3usize, 9, 14, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let (recs, damage) = records(&bad);
        assert!(damage.is_some(), "byte {at} flipped, no damage reported");
        assert!(recs.len() < events.len());
    }
    let (recs, damage) = records(&bytes[..bytes.len() - 3]);
    assert_eq!(recs.len(), 2);
    assert!(damage.is_some_and(|d| d.contains("torn")));
}

#[test]
fn the_writer_makes_a_file_tensorboard_finds_and_the_reader_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    w.write(&Event::scalars(1.0, 3, vec![("x".into(), 2.0)])).unwrap();
    let mut again = EventWriter::append(w.path()).unwrap();
    again.write(&Event::scalars(2.0, 4, vec![("x".into(), 3.0)])).unwrap();
    let files = event_files(dir.path()).unwrap();
    assert_eq!(files, vec![w.path().to_path_buf()]);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = read_events(&files[0]).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
    assert_eq!((events[1].step, events[1].scalars.clone()), (3, vec![("x".into(), 2.0)]));
    assert_eq!((events[2].step, events[2].scalars.clone()), (4, vec![("x".into(), 3.0)]));
    // A second writer in the same second gets its own file.
    let other = EventWriter::create(dir.path()).unwrap();
    assert_ne!(other.path(), w.path());
}
