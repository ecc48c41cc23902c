//! What the expert's client decodes equals the device screen, exactly, for
//! every scenario and every pixel format (xxh3-64 of the XRGB8888 frame with
//! the X byte zero, as `shoulder watch --stats-json` reports it).

use shoulder_capture::encoder::EARLY_PART_BYTES;
use shoulder_capture::rawfile::RawFileSource;
use shoulder_capture::scenarios::{Scenario, ScenarioFrames};
use shoulder_capture::{
    Compression, EncodeError, EncodeStats, EncodedUpdate, Encoder, Frame, FrameSource, PixelFormat,
    ScreenGeometry,
};
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::{FrameDecoder, MAX_UPDATE_PAYLOAD};
use shoulder_proto::msg::{Encoding, MAX_RECTS_PER_PART, Message};
use shoulder_proto::session::device::LocalDecision;
use xxhash_rust::xxh3::xxh3_64;

/// Frames per scenario: covers the first full update, several incremental
/// ones and (for typing) more than one character.
const FRAMES: usize = 4;

/// Re-encodes XRGB8888 pixels (B, G, R, X) as `format`.
fn from_xrgb(format: PixelFormat, xrgb: &[u8]) -> Vec<u8> {
    xrgb.chunks_exact(4)
        .flat_map(|p| {
            let (b, g, r) = (p[0], p[1], p[2]);
            match format {
                PixelFormat::Xrgb8888 => vec![b, g, r, 0xaa],
                PixelFormat::Argb8888 => vec![b, g, r, 0xff],
                PixelFormat::Xbgr8888 => vec![r, g, b, 0x11],
                PixelFormat::Abgr8888 => vec![r, g, b, 0x80],
                PixelFormat::Rgb565 => {
                    let v =
                        (u16::from(r) >> 3) << 11 | (u16::from(g) >> 2) << 5 | u16::from(b) >> 3;
                    v.to_le_bytes().to_vec()
                }
            }
        })
        .collect()
}

/// Sends the update through real framing, as the agent does, and applies
/// what the client decodes.
fn deliver(fb: &mut Option<Framebuffer>, update: EncodedUpdate) {
    for part in &update.parts {
        assert!(part.rects.len() <= MAX_RECTS_PER_PART);
        assert!(part.payload_len() <= MAX_UPDATE_PAYLOAD);
    }
    deliver_messages(fb, &update.into_messages().collect::<Vec<_>>());
}

#[test]
fn every_scenario_and_format_decodes_to_the_source() {
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    // Odd size: partial tiles on the right and bottom.
    let (w, h) = (481u32, 271u32);
    for scenario in Scenario::ALL {
        let seq = ScenarioFrames::new(scenario, w, h);
        let mut xrgb = seq.buffer();
        for (format, compression) in PixelFormat::ALL.into_iter().flat_map(|f| {
            [
                Compression::Lz4,
                Compression::Deflate,
                Compression::DeflateStream,
            ]
            .map(|c| (f, c))
        }) {
            let g = ScreenGeometry {
                width: w,
                height: h,
                format,
            };
            let pitch = w as usize * format.bytes_per_pixel();
            let mut enc = Encoder::new();
            enc.set_compression(compression);
            let mut fb = None;
            for i in 0..FRAMES {
                seq.render(i, &mut xrgb);
                let pixels = from_xrgb(format, &xrgb);
                let frame = Frame::new(&pixels, g, pitch).unwrap();
                let update = enc
                    .encode(&consent, &frame, false)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{scenario} {format} frame {i}: change not seen"));
                assert_eq!(update.screen.is_some(), i == 0);
                deliver(&mut fb, update);
                let client = fb.as_ref().unwrap().normalized();
                assert_eq!(
                    xxh3_64(&client),
                    xxh3_64(&frame.to_xrgb8888()),
                    "{scenario} {format} {compression:?} frame {i}"
                );
                assert!(enc.encode(&consent, &frame, false).unwrap().is_none());
            }
        }
    }
}

#[test]
fn scroll_scenario_uses_copies() {
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let seq = ScenarioFrames::new(Scenario::Scroll, 800, 480);
    let g = ScreenGeometry {
        width: 800,
        height: 480,
        format: PixelFormat::Xrgb8888,
    };
    let mut px = seq.buffer();
    let mut enc = Encoder::new();
    for i in 0..4 {
        seq.render(i, &mut px);
        let u = enc
            .encode(&consent, &Frame::new(&px, g, 3200).unwrap(), false)
            .unwrap()
            .unwrap();
        if i > 0 {
            assert!(u.stats.copy >= 1, "frame {i}: {:?}", u.stats);
            assert!(matches!(
                u.parts[0].rects[0].encoding,
                Encoding::Copy { .. }
            ));
        }
    }
}

#[test]
fn a_raw_file_written_frame_by_frame_reaches_the_client() {
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let dir = std::env::temp_dir().join(format!("shoulder-capture-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("screen.raw");
    let seq = ScenarioFrames::new(Scenario::PageSwitch, 640, 360);
    let mut px = seq.buffer();
    seq.render(0, &mut px);
    std::fs::write(&path, &px).unwrap();
    let spec = format!("rawfile:{}@640x360:XRGB8888", path.display());
    let mut source = shoulder_capture::open(&spec.parse().unwrap()).unwrap();
    let mut enc = Encoder::new();
    let mut fb = None;
    for i in 0..4 {
        seq.render(i, &mut px);
        std::fs::write(&path, &px).unwrap();
        let frame = source.capture().unwrap();
        deliver(
            &mut fb,
            enc.encode(&consent, &frame, false).unwrap().unwrap(),
        );
        assert_eq!(
            xxh3_64(&fb.as_ref().unwrap().normalized()),
            xxh3_64(&px),
            "frame {i}"
        );
    }
    // Direct construction works too.
    let g = ScreenGeometry {
        width: 640,
        height: 360,
        format: PixelFormat::Xrgb8888,
    };
    let mut direct = RawFileSource::open(&path, g, 2560).unwrap();
    assert_eq!(direct.capture().unwrap().to_xrgb8888(), px);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_update_without_live_view_consent() {
    let (mut pair, consent) = shoulder_proto::testing::granted_view();
    let g = ScreenGeometry {
        width: 4,
        height: 4,
        format: PixelFormat::Xrgb8888,
    };
    let px = vec![7u8; 64];
    let mut enc = Encoder::new();
    assert!(
        enc.encode(&consent, &Frame::new(&px, g, 16).unwrap(), false)
            .is_ok()
    );
    pair.local(LocalDecision::End);
    assert_eq!(
        enc.encode(&consent, &Frame::new(&px, g, 16).unwrap(), true)
            .unwrap_err(),
        EncodeError::ConsentWithdrawn
    );
}

/// Encodes `frame` handing parts to an early sink, as the agent does, and
/// returns every message in the order the expert gets them: the early ones,
/// then the rest of the update; and how many went early, and the stats.
fn encode_early(
    enc: &mut Encoder,
    consent: &shoulder_proto::consent::ViewConsent,
    frame: &Frame<'_>,
) -> Option<(Vec<Message>, usize, EncodeStats)> {
    let mut early = Vec::new();
    let rest = enc
        .encode_into(consent, frame, false, std::time::Instant::now(), &mut |m| {
            early.push(m);
            true
        })
        .unwrap()?;
    let (sent_early, stats) = (early.len(), rest.stats);
    early.extend(rest.into_messages());
    Some((early, sent_early, stats))
}

/// Applies messages through real framing, checking the order of an update:
/// screen info first, parts of one seq, only the last marked last.
fn deliver_messages(fb: &mut Option<Framebuffer>, msgs: &[Message]) {
    let mut wire = Vec::new();
    for m in msgs {
        shoulder_proto::frame::encode_into(m, &mut wire).expect("every message fits a frame");
    }
    let mut decoder = FrameDecoder::default();
    decoder.push(&wire).unwrap();
    let (mut seq, mut last_seen) = (None, false);
    while let Some(payload) = decoder.next_payload().unwrap() {
        match shoulder_proto::frame::decode_payload(&payload).unwrap() {
            Message::ScreenInfo(info) => {
                assert!(seq.is_none(), "screen info after a part");
                *fb = Some(Framebuffer::new(&info).unwrap());
            }
            Message::Update(part) => {
                assert!(!last_seen, "parts after the last one");
                assert_eq!(*seq.get_or_insert(part.seq), part.seq, "one seq per update");
                last_seen = part.last;
                fb.as_mut()
                    .expect("screen info first")
                    .apply(&part)
                    .unwrap();
            }
            other => panic!("unexpected {}", other.name()),
        }
    }
    assert!(last_seen, "the update ends with last = true");
}

#[test]
fn parts_sent_before_the_update_ends_decode_to_the_source() {
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let (w, h) = (1280u32, 720u32);
    let g = ScreenGeometry {
        width: w,
        height: h,
        format: PixelFormat::Xrgb8888,
    };
    for compression in [
        Compression::Lz4,
        Compression::Deflate,
        Compression::DeflateStream,
    ] {
        for scenario in Scenario::ALL {
            let seq = ScenarioFrames::new(scenario, w, h);
            let mut px = seq.buffer();
            let mut enc = Encoder::new();
            enc.set_compression(compression);
            let mut fb = None;
            let mut most_early = 0;
            for i in 0..FRAMES {
                seq.render(i, &mut px);
                let frame = Frame::new(&px, g, w as usize * 4).unwrap();
                let (msgs, early, _) = encode_early(&mut enc, &consent, &frame)
                    .unwrap_or_else(|| panic!("{scenario} frame {i}: change not seen"));
                assert_eq!(
                    matches!(msgs[0], Message::ScreenInfo(_)),
                    i == 0,
                    "{scenario} {compression:?} frame {i}: screen info first, once"
                );
                // Only the last part waits for the end of the update, and
                // a part goes early only once it holds enough to be worth it.
                let waited = msgs[early..]
                    .iter()
                    .filter(|m| matches!(m, Message::Update(_)))
                    .count();
                assert_eq!(waited, 1, "{scenario} {compression:?}");
                for m in &msgs[..early] {
                    if let Message::Update(p) = m {
                        let bytes: usize = p.payload_len();
                        assert!(
                            bytes >= EARLY_PART_BYTES || p.rects.len() == MAX_RECTS_PER_PART,
                            "{scenario} {compression:?}: an early part of {bytes} bytes"
                        );
                    }
                }
                most_early = most_early.max(early);
                deliver_messages(&mut fb, &msgs);
                assert_eq!(
                    xxh3_64(&fb.as_ref().unwrap().normalized()),
                    xxh3_64(&frame.to_xrgb8888()),
                    "{scenario} {compression:?} frame {i}"
                );
            }
            // Noise is MBs in any compression: its start goes before its
            // end.
            assert!(
                scenario != Scenario::Noise || most_early >= 2,
                "{scenario} {compression:?}: {most_early} messages went early"
            );
        }
    }
}

#[test]
fn withdrawn_consent_stops_an_update_mid_way_and_the_next_view_starts_whole() {
    let (mut pair, consent) = shoulder_proto::testing::granted_view();
    let (w, h) = (1280u32, 720u32);
    let g = ScreenGeometry {
        width: w,
        height: h,
        format: PixelFormat::Xrgb8888,
    };
    let seq = ScenarioFrames::new(Scenario::Noise, w, h);
    let mut px = seq.buffer();
    seq.render(0, &mut px);
    let frame = Frame::new(&px, g, w as usize * 4).unwrap();
    let mut enc = Encoder::new();
    enc.set_compression(Compression::DeflateStream);
    let mut got = Vec::new();
    // The person ends the session as the first part is handed over.
    let err = enc
        .encode_into(
            &consent,
            &frame,
            false,
            std::time::Instant::now(),
            &mut |m| {
                let part = matches!(m, Message::Update(_));
                got.push(m);
                if part {
                    pair.local(LocalDecision::End);
                }
                true
            },
        )
        .unwrap_err();
    assert_eq!(err, EncodeError::Refused);
    assert_eq!(
        got.iter()
            .filter(|m| matches!(m, Message::Update(_)))
            .count(),
        1,
        "nothing after the consent ended"
    );
    // Another session's view: the encoder does not build on the cut update.
    let (_pair2, consent2) = shoulder_proto::testing::granted_view();
    let (msgs, _, _) = encode_early(&mut enc, &consent2, &frame).expect("a whole screen");
    assert!(matches!(msgs[0], Message::ScreenInfo(_)));
    let mut fb = None;
    deliver_messages(&mut fb, &msgs);
    assert_eq!(
        xxh3_64(&fb.unwrap().normalized()),
        xxh3_64(&frame.to_xrgb8888())
    );
}

#[test]
fn large_updates_made_on_two_threads_are_the_bytes_one_thread_makes() {
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let (w, h) = (1280u32, 720u32);
    for format in [PixelFormat::Xrgb8888, PixelFormat::Rgb565] {
        let g = ScreenGeometry {
            width: w,
            height: h,
            format,
        };
        let pitch = w as usize * format.bytes_per_pixel();
        for compression in [
            Compression::Lz4,
            Compression::Deflate,
            Compression::DeflateStream,
        ] {
            for scenario in [Scenario::PageSwitch, Scenario::Noise, Scenario::Scroll] {
                let seq = ScenarioFrames::new(scenario, w, h);
                let mut xrgb = seq.buffer();
                let [mut one, mut two] = [false, true].map(|threads| {
                    let mut e = Encoder::new();
                    e.set_compression(compression);
                    e.set_threads(threads);
                    e
                });
                let mut fb = None;
                let mut threaded = 0;
                for i in 0..FRAMES {
                    seq.render(i, &mut xrgb);
                    let px = from_xrgb(format, &xrgb);
                    let frame = Frame::new(&px, g, pitch).unwrap();
                    let (a, _, sa) = encode_early(&mut one, &consent, &frame).unwrap();
                    let (b, _, sb) = encode_early(&mut two, &consent, &frame).unwrap();
                    assert!(a == b, "{scenario} {format} {compression:?} frame {i}");
                    assert!(!sa.two_threads);
                    threaded += usize::from(sb.two_threads);
                    deliver_messages(&mut fb, &b);
                    assert_eq!(
                        xxh3_64(&fb.as_ref().unwrap().normalized()),
                        xxh3_64(&frame.to_xrgb8888()),
                        "{scenario} {format} {compression:?} frame {i}"
                    );
                }
                // The first update is the whole screen: large, and the
                // second thread is used with deflate.
                let deflate = compression != Compression::Lz4;
                assert_eq!(threaded > 0, deflate, "{scenario} {format} {compression:?}");
            }
        }
    }
}
