"""Case attachments on the production app: photos lose every byte of metadata (GPS above
all) before they are stored, voice keeps only its audio frames, the stored bytes' hash is
in the signed action (verified offline), refusals store nothing, and only those who may
see a case get its attachments."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from mapserver import db
from mapserver.cases import attachments, media
from mapserver.errors import InvalidInput

from .app_client import Install
from .conftest import demo_database
from .evidence import checkpoint
from .sequenced import sequenced
from .test_cases import Desk

GPS_IFD = 0x8825
XMP_NS = b"http://ns.adobe.com/xap/1.0/\x00"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    b'syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude='
    b'"39,58.9N" exif:GPSLongitude="116,18.4E"/></rdf:RDF></x:xmpmeta>'
)


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the image data, parsed by hand."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    found, i = [], 2
    while i < len(data):
        assert data[i] == 0xFF, f"no marker at {i}"
        marker = data[i + 1]
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        found.append((marker, data[i + 4 : i + 2 + length]))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + length
    return found


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    kinds, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kinds.append(data[i + 4 : i + 8])
        i += 12 + length
    return kinds


def phone_photo() -> bytes:
    """A JPEG as a phone makes it: EXIF with GPS and orientation 6 (rotate 90° clockwise to
    view), an ICC profile, XMP with the place, and a comment. Left half red, right blue."""
    im = Image.new("RGB", (64, 48), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 32, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update(
        {1: "N", 2: (39.0, 58.0, 54.0), 3: "E", 4: (116.0, 18.0, 24.0), 6: 52.0}
    )
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes(), icc_profile=icc, comment=b"GPS 39.98N 116.31E")
    data = out.getvalue()
    xmp = XMP_NS + XMP
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp + data[2:]


def screenshot_png() -> bytes:
    im = Image.new("RGBA", (20, 10), (0, 128, 0, 200))
    info = PngInfo()
    info.add_text("Comment", "位置 39.98N 116.31E")
    info.add_text("GPS", "39.98N 116.31E")  # Latin-1: a tEXt chunk
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (39.0, 58.0, 54.0), 3: "E", 4: (116.0, 18.0, 24.0)})
    im.save(out, "PNG", pnginfo=info, icc_profile=icc, exif=exif.tobytes())
    return out.getvalue()


def amr(frames: int = 50) -> bytes:
    return b"#!AMR\n" + (b"\x3c" + bytes(31)) * frames  # mode 7 (12.2 kbit/s), 32 bytes


def mp3(frames: int = 20) -> bytes:
    """MPEG-1 layer III, 128 kbit/s, 44.1 kHz (417-byte frames) between ID3v2 and ID3v1
    tags that hold a place."""
    text = b"\x03GPS\x0039.98N 116.31E"
    frame = b"TXXX" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(frame)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    id3v2 = b"ID3\x04\x00\x00" + synchsafe + frame
    audio = (b"\xff\xfb\x90\x00" + bytes(413)) * frames
    id3v1 = b"TAG" + b"39.98N 116.31E".ljust(125, b"\x00")
    return id3v2 + audio + id3v1


class AttachmentDesk(Desk):
    def upload(self, who: str, data: bytes, content_type: str):  # type: ignore[no-untyped-def]
        return self.client(who).post("/cases/attachments", data=data, content_type=content_type)

    def stored(self) -> tuple[int, int]:
        with psycopg.connect(self.install.settings.database_url) as conn:
            return tuple(
                conn.execute(
                    "SELECT (SELECT count(*) FROM case_attachment),"
                    " (SELECT count(*) FROM case_attachment_link)"
                ).fetchone()
            )

    def data(self, sha256: str) -> bytes:
        with psycopg.connect(self.install.settings.database_url) as conn:
            return bytes(
                conn.execute(
                    "SELECT data FROM case_attachment WHERE sha256 = %s LIMIT 1", (sha256,)
                ).fetchone()[0]
            )


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttachmentDesk]:
    settings = demo_database("citygrid_attachments", tmp_path_factory.mktemp("attach-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("attach-certs"), rate_limit_api="*=100000/hour"
    )
    yield AttachmentDesk(install)
    install.close()
    db.drop_database(settings)


def test_a_phone_photo_is_stored_without_any_metadata(desk: AttachmentDesk) -> None:
    original = phone_photo()
    markers = [m for m, _ in jpeg_segments(original)]
    assert markers.count(0xE1) == 2 and 0xE2 in markers and 0xFE in markers  # Exif, XMP, ICC
    reply = desk.upload("inspector", original, "image/jpeg")
    assert reply.status_code == 201, reply.get_json()
    shown = reply.get_json()
    stored = desk.data(shown["sha256"])
    assert shown == {
        "sha256": hashlib.sha256(stored).hexdigest(),
        "kind": "photo",
        "media_type": "image/jpeg",
        "bytes": len(stored),
        "width": 48,  # turned upright by its orientation before the EXIF went
        "height": 64,
    }
    segments = jpeg_segments(stored)
    app_markers = [m for m, _ in segments if 0xE0 <= m <= 0xEF or m == 0xFE]
    assert app_markers == [0xE0] and segments[0][1].startswith(b"JFIF\x00")
    for needle in (b"Exif", b"GPS", b"xap", b"xmp", b"ICC_PROFILE", b"PhoneMaker", b"39"):
        assert needle not in stored, needle
    with Image.open(io.BytesIO(stored)) as im:
        assert not im.getexif() and not im.info.get("icc_profile")
        rgb = im.convert("RGB")
        top, bottom = rgb.getpixel((24, 5)), rgb.getpixel((24, 58))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top after turning


def test_png_keeps_only_whitelisted_chunks(desk: AttachmentDesk) -> None:
    original = screenshot_png()
    assert {b"tEXt", b"iTXt", b"iCCP", b"eXIf"} <= set(png_chunk_types(original))
    reply = desk.upload("operator", original, "image/png")
    assert reply.status_code == 201, reply.get_json()
    stored = desk.data(reply.get_json()["sha256"])
    assert set(png_chunk_types(stored)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
    assert b"116.31" not in stored and b"XML:com.adobe.xmp" not in stored
    with Image.open(io.BytesIO(stored)) as im:
        assert im.size == (20, 10) and im.convert("RGBA").getpixel((3, 3)) == (0, 128, 0, 200)


def test_voice_keeps_only_its_audio_frames(desk: AttachmentDesk) -> None:
    reply = desk.upload("inspector", amr(50), "audio/amr")
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["duration_ms"] == 1000 and reply.get_json()["kind"] == "voice"
    assert desk.data(reply.get_json()["sha256"]) == amr(50)
    reply = desk.upload("inspector", mp3(20), "audio/mpeg")
    assert reply.status_code == 201, reply.get_json()
    shown = reply.get_json()
    stored = desk.data(shown["sha256"])
    assert stored == (b"\xff\xfb\x90\x00" + bytes(413)) * 20  # no ID3v2, no ID3v1
    assert shown["bytes"] == 417 * 20 and shown["duration_ms"] == round(20 * 1152 / 44.1)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"hello", "text/plain", 415, "Content-Type must be one of"),
        (amr(), "image/jpeg", 415, "the bytes are audio/amr, not image/jpeg"),
        (phone_photo(), "image/png", 415, "the bytes are image/jpeg"),
        (b"\xff\xd8\xff\xe0" + bytes(2000), "image/jpeg", 400, "not a readable JPEG"),
        (b"", "image/jpeg", 400, "empty"),
        (b"#!AMR\n\x3c" + bytes(10), "audio/amr", 400, "not a clean AMR stream"),
        (mp3(3)[:-128] + b"trailing junk", "audio/mpeg", 400, "not a clean MP3 stream"),
        (b"\xff\xd8\xff" + bytes(8 * media.MiB), "image/jpeg", 413, ""),
        (b"#!AMR\n" + bytes(4 * media.MiB), "audio/amr", 413, ""),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(
    desk: AttachmentDesk, body: bytes, content_type: str, status: int, says: str
) -> None:
    before = desk.stored()
    reply = desk.upload("inspector", body, content_type)
    assert reply.status_code == status and reply.is_json, (reply.status_code, reply.get_json())
    assert says in reply.get_json()["message"]
    assert desk.stored() == before


def test_only_roles_that_make_or_move_cases_upload(desk: AttachmentDesk) -> None:
    desk.install.account("at-supervisor", ["street_supervisor"], "street-001")
    reply = desk.install.client("at-supervisor").post(
        "/cases/attachments", data=amr(), content_type="audio/amr"
    )
    assert reply.status_code == 403


def test_hashes_in_signed_actions_verified_offline(desk: AttachmentDesk, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    photo_shown = desk.upload("operator", phone_photo(), "image/jpeg").get_json()
    photo = photo_shown["sha256"]
    created = desk.record(attachments=[photo])
    assert created.status_code == 201, created.get_json()
    number = created.get_json()["number"]
    voice = desk.upload("inspector", amr(25), "audio/amr").get_json()
    verified = desk.act("inspector", number, "verify", note="属实", attachments=[voice["sha256"]])
    assert verified.status_code == 200, verified.get_json()

    history = desk.client("leader").get(f"/cases/{number}").get_json()["history"]
    assert [h["attachments"] for h in history] == [[photo_shown], [voice]]
    served = desk.client("inspector").get(f"/cases/{number}/attachments/{photo}")
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert hashlib.sha256(served.data).hexdigest() == photo  # what was signed is what is served
    assert "GPS" not in served.get_data(as_text=False).decode("latin-1")

    checkpoint(desk.install.settings)  # the acts under a signed checkpoint, to export them
    bundle = desk.client("leader").get(f"/cases/{number}/bundle").get_json()
    signed = [json.loads(base64.b64decode(e["bundle"]["payload"])) for e in bundle["events"]]
    assert signed[0]["parameters"]["attachments"] == [photo]
    assert signed[1]["parameters"]["attachments"] == [voice["sha256"]]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(bundle))
    ca = str(desk.install.store.cert_path)
    pins = ["--ca", ca, "--log-key", str(desk.install.settings.pki_dir / "audit-ed25519.pub")]
    valid = CliRunner().invoke(main, ["verify-action", str(path), *pins])
    assert valid.exit_code == 0 and valid.output.startswith(f"valid: case {number}, 2 signed")
    # Another photo's hash in place of the signed one: the signature no longer holds.
    event = bundle["events"][0]["bundle"]
    event["payload"] = base64.b64encode(
        base64.b64decode(event["payload"]).replace(photo.encode(), b"0" * 64)
    ).decode()
    path.write_text(json.dumps(bundle))
    forged = CliRunner().invoke(main, ["verify-action", str(path), *pins])
    assert forged.exit_code == 1 and "INVALID" in forged.output


def test_only_ones_own_uploads_can_be_attached(desk: AttachmentDesk) -> None:
    mine = desk.upload("operator", amr(7), "audio/amr").get_json()["sha256"]
    theirs = desk.upload("inspector", amr(8), "audio/amr").get_json()["sha256"]
    number = desk.record().get_json()["number"]
    before, snapshot = desk.stored(), desk.snapshot(number)
    for listed, status, says in [
        (["f" * 64], 400, "no upload"),  # unknown
        ([theirs], 400, "no upload"),  # someone else's: the same answer
        ([mine, mine], 400, "listed twice"),
        (["F" * 64], 400, "not a sha256 hash"),
        ("abc", 400, "must be a list"),
        ([mine] * 10, 400, "at most 9"),
    ]:
        reply = desk.act("operator", number, "accept", attachments=listed)
        assert reply.status_code == status, (listed, reply.get_json())
        assert says in reply.get_json()["message"]
    refused = desk.record(attachments=[theirs])  # a creation: refused, its number given back
    assert refused.status_code == 400
    assert desk.stored() == before and desk.snapshot(number) == snapshot
    assert desk.act("operator", number, "accept", attachments=[mine]).status_code == 200
    other = desk.record().get_json()["number"]
    assert int(other[-6:]) == int(number[-6:]) + 1  # gap-free despite the refused creation
    again = desk.act("operator", other, "accept", attachments=[mine])  # on a second case too
    assert again.status_code == 200, again.get_json()


def test_attachments_only_for_those_who_may_see_the_case(desk: AttachmentDesk) -> None:
    sha = desk.upload("operator", screenshot_png(), "image/png").get_json()["sha256"]
    number = desk.record(attachments=[sha]).get_json()["number"]  # in street 001
    other = desk.record().get_json()["number"]
    path = f"/cases/{number}/attachments/{sha}"
    assert desk.client("inspector").get(path).status_code == 200
    for who, asked in [
        ("inspector2", path),  # a case of another street: as if it did not exist
        ("supervisor", path),
        ("otherbureau", path),  # not dispatched to it
        ("inspector", f"/cases/{other}/attachments/{sha}"),  # not this case's
        ("inspector", f"/cases/{number}/attachments/{'0' * 64}"),
        ("inspector", f"/cases/{number}/attachments/..%2f..%2fetc"),
    ]:
        reply = desk.client(who).get(asked)
        assert reply.status_code == 404 and reply.is_json, (who, asked, reply.status_code)


def test_the_serving_role_can_never_change_an_attachment(desk: AttachmentDesk) -> None:
    sha = desk.upload("operator", amr(3), "audio/amr").get_json()["sha256"]
    number = desk.record(attachments=[sha]).get_json()["number"]
    assert number
    for statement in (
        "UPDATE case_attachment SET data = 'x'",
        "DELETE FROM case_attachment",
        "UPDATE case_attachment_link SET position = 1",
        "DELETE FROM case_attachment_link",
    ):
        with (
            psycopg.connect(desk.install.settings.serving_database_url) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
    # The owner may purge unattached uploads, never change one or remove an attached one.
    with psycopg.connect(desk.install.settings.database_url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE case_attachment SET bytes = bytes")
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("DELETE FROM case_attachment WHERE sha256 = %s", (sha,))


def test_unattached_uploads_are_bounded(
    desk: AttachmentDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk.install.account("at-quota", ["inspector"], "street-001")
    client = desk.install.client("at-quota")
    monkeypatch.setattr(attachments, "UNLINKED_PER_DAY", 2)
    replies = [
        client.post("/cases/attachments", data=amr(i + 1), content_type="audio/amr")
        for i in range(3)
    ]
    assert [r.status_code for r in replies] == [201, 201, 409]
    assert replies[2].get_json()["error"] == "upload_quota"
    again = client.post("/cases/attachments", data=amr(1), content_type="audio/amr")
    assert again.status_code == 201  # the same bytes again: the first upload, not a new one


def test_audit_names_the_stored_hash(desk: AttachmentDesk) -> None:
    reply = desk.upload("inspector", amr(4), "audio/amr")
    sequenced(desk.install.settings.database_url)
    with psycopg.connect(desk.install.settings.database_url) as conn:
        action, detail = conn.execute(
            "SELECT action, detail FROM audit_entry WHERE request_id = %s",
            (reply.headers["X-Request-Id"],),
        ).fetchone()
    assert action == "case.attach" and detail["sha256"] == reply.get_json()["sha256"]


def test_unreadable_exif_and_huge_pictures(desk: AttachmentDesk) -> None:
    im = Image.new("RGB", (30, 20), (10, 20, 30))
    out = io.BytesIO()
    im.save(out, "PNG", exif=b"Exif\x00\x00GPS 39.98N")  # EXIF that is no TIFF structure
    reply = desk.upload("inspector", out.getvalue(), "image/png")
    assert reply.status_code == 201, reply.get_json()  # no orientation to apply; none is kept
    assert b"39.98" not in desk.data(reply.get_json()["sha256"])
    before = desk.stored()
    huge = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(huge, "PNG")  # 60 million pixels in a few KiB
    refused = desk.upload("inspector", huge.getvalue(), "image/png")
    assert (
        refused.status_code == 400 and "at most 50,000,000 pixels" in refused.get_json()["message"]
    )
    assert desk.stored() == before


def test_the_larger_body_is_for_attachments_only(desk: AttachmentDesk) -> None:
    big = b"\xff\xd8\xff" + bytes(2 * media.MiB)  # over the app's 1 MiB, under a photo's 8
    assert desk.upload("inspector", big, "image/jpeg").status_code == 400  # read, undecodable
    envelope = desk.client("operator").post(
        "/cases/record", data=b"{" + b" " * (2 * media.MiB) + b"}", content_type="application/json"
    )
    assert envelope.status_code == 413


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    from tiles import png

    out = [png.SIGNATURE]
    for kind, payload in chunks:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        out.append(struct.pack(">I", len(payload)) + kind + payload + crc)
    return b"".join(out)


def test_what_cleaning_writes_is_pristine_and_nothing_else_is() -> None:
    """The exchange peer's photos are read, never re-encoded (their hashes are signed): what
    this install's own cleaning writes passes; a place hidden anywhere in the structure of a
    JPEG or PNG (between segments, after the scan, after the end, in a JFIF thumbnail,
    after the compressed rows, in a text chunk) or a malformed file is refused, never a 500."""
    from tiles import png

    grey = io.BytesIO()
    Image.new("L", (30, 20), 90).save(grey, "PNG")
    for media_type, raw in (
        ("image/jpeg", phone_photo()),
        ("image/png", screenshot_png()),
        ("image/png", grey.getvalue()),
    ):
        cleaned = media.clean(media_type, raw)
        assert media.check_clean(media_type, cleaned.data) == cleaned

    jpeg = media.clean("image/jpeg", phone_photo()).data
    place = b"GPS 39.9042N 116.4074E"
    hidden = {
        "a byte between segments": jpeg[:20] + b"\x00" + _segment(0xE1, b"Exif\0\0" + place)
        + jpeg[20:],
        "a comment after the scan": jpeg[:-2] + _segment(0xFE, place) + jpeg[-2:],
        "EXIF after the scan": jpeg[:-2] + _segment(0xE1, b"Exif\0\0" + place) + jpeg[-2:],
        "bytes after the end": jpeg + place,
        "a JFIF thumbnail": jpeg[:4] + struct.pack(">H", 16 + 12) + jpeg[6:18] + b"\x02\x02"
        + bytes(12) + jpeg[20:],
        "the file cut short": jpeg[: len(jpeg) // 2],
    }  # fmt: skip
    _all_refused("image/jpeg", hidden)

    clean_png = media.clean("image/png", screenshot_png()).data
    found = png.chunks(clean_png)
    rows = b"".join(p for kind, p in found if kind == b"IDAT")
    head, end = found[0], found[-1]
    hidden_png = {
        "bytes after the compressed rows": _png_of([head, (b"IDAT", rows + place), end]),
        "more rows than the header": _png_of(
            [head, (b"IDAT", zlib.compress(zlib.decompress(rows) + bytes(81))), end]
        ),
        "a text chunk": _png_of([head, (b"tEXt", b"GPS\x00" + place), *found[1:]]),
        "a bad CRC": clean_png[:-5] + bytes([clean_png[-5] ^ 1]) + clean_png[-4:],
        "bytes after the end": clean_png + place,
    }
    _all_refused("image/png", hidden_png)


def _all_refused(media_type: str, files: dict[str, bytes]) -> None:
    for what, data in files.items():
        try:
            media.check_clean(media_type, data)
        except InvalidInput:
            continue  # a JSON 400 on the exchange's PUT
        raise AssertionError(f"accepted with {what}")


def test_one_photo_on_two_cases(desk: AttachmentDesk) -> None:
    """One photo covering two duplicate complaints, or the bureau's photo of work that settled
    both: the second case's step was 409 "already attached to a case". Each step links the
    same upload, its bytes stored once; every other rule holds."""
    sha = desk.upload("operator", amr(11), "audio/amr").get_json()["sha256"]
    first = desk.record(attachments=[sha]).get_json()["number"]
    before = desk.stored()
    second = desk.record(description="市民再次来电：同一处垃圾", attachments=[sha])
    assert second.status_code == 201, second.get_json()
    number = second.get_json()["number"]
    assert desk.stored() == (before[0], before[1] + 1)  # one more link, no more bytes
    for case in (first, number):
        shown = desk.client("inspector").get(f"/cases/{case}").get_json()
        assert [a["sha256"] for a in shown["history"][0]["attachments"]] == [sha], case
        served = desk.client("inspector").get(f"/cases/{case}/attachments/{sha}")
        assert served.status_code == 200 and hashlib.sha256(served.data).hexdigest() == sha
    # Uploading the same bytes again is the same upload, which may go on a case again.
    assert desk.upload("operator", amr(11), "audio/amr").get_json()["sha256"] == sha
    # Still only the uploader's: another person naming it is refused as before.
    theirs = desk.act("inspector", number, "verify", note="属实", attachments=[sha])
    assert theirs.status_code == 400 and "no upload" in theirs.get_json()["message"]
    # A bureau handling both cases with one photo of its work.
    work = desk.upload("bureau", screenshot_png(), "image/png").get_json()["sha256"]
    for case in (first, number):
        for who, name, params in [
            ("operator", "accept", {}),
            ("leader", "file", {}),
            ("dispatcher", "dispatch", {"bureau": desk.bureau}),
            ("bureau", "receive", {}),
        ]:
            assert desk.act(who, case, name, **params).status_code == 200, (case, name)
        done = desk.act("bureau", case, "handle", result="已清运", attachments=[work])
        assert done.status_code == 200, done.get_json()
        assert [a["sha256"] for a in done.get_json()["history"][-1]["attachments"]] == [work]
    # Read scoped to each case: another bureau sees neither.
    for case in (first, number):
        assert desk.client("otherbureau").get(f"/cases/{case}/attachments/{work}").status_code == (
            404
        )
    with psycopg.connect(desk.install.settings.database_url) as conn:
        rows, links = conn.execute(
            "SELECT count(DISTINCT a.id), count(*) FROM case_attachment a"
            " JOIN case_attachment_link l ON l.attachment_id = a.id"
            " WHERE a.sha256 = %s AND a.uploader = 'cs-bureau'",
            (work,),
        ).fetchone()
    assert (rows, links) == (1, 2)


def test_uploads_no_step_names_are_pruned_by_the_owner(desk: AttachmentDesk) -> None:
    """`citygrid case prune-uploads` removes an upload no step names once it is old enough
    (a report never sent), never one a step names, nor a young one whose report may still
    come; the serving role may not."""
    from click.testing import CliRunner

    from mapserver.cli import main

    settings = desk.install.settings
    fresh = desk.upload("inspector", amr(11), "audio/amr").get_json()["sha256"]
    number = desk.record().get_json()["number"]
    old, old_named = "a1" * 32, "b2" * 32
    with psycopg.connect(settings.database_url) as conn:  # the owner: rows as a month ago
        for sha in (old, old_named):
            conn.execute(
                """INSERT INTO case_attachment (sha256, kind, media_type, data, bytes,
                       duration_ms, uploader, uploaded_at)
                   VALUES (%s, 'voice', 'audio/amr', '\\x2321414d520a', 6, 0, 'cs-inspector',
                           now() - interval '40 days')""",
                (sha,),
            )
        conn.execute(
            """INSERT INTO case_attachment_link (attachment_id, case_id, event_id, position)
               SELECT a.id, e.case_id, e.id, 90 FROM case_attachment a, case_event e
               JOIN city_case c ON c.id = e.case_id
               WHERE a.sha256 = %s AND c.number = %s""",
            (old_named, number),
        )
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
    }
    serving = settings.database_url.replace("//postgres@", "//citygrid_app@")
    refused = CliRunner().invoke(
        main, ["case", "prune-uploads"], env={**env, "CITYGRID_DATABASE_URL": serving}
    )
    assert refused.exit_code == 1 and "may not remove uploads" in refused.output
    assert refused.output.count("\n") == 1
    done = CliRunner().invoke(main, ["case", "prune-uploads", "--older-than", "30"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output == "removed 1 upload(s), 6 bytes, that no step names\n"
    with psycopg.connect(settings.database_url) as conn:
        kept = {r[0] for r in conn.execute("SELECT sha256 FROM case_attachment").fetchall()}
    assert old not in kept and {old_named, fresh} <= kept
