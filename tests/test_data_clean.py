"""Cleaning functions on inline samples of each source format."""

import zlib

from engram_interp.data import clean
from engram_interp.data.sources import read_r_character_vector


def test_brown_tags_stripped_and_detokenized():
    tagged = ("\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' "
              "that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n\tIt/pps isn't/bez* over/rp ,/, he/pps said/vbd ./.")
    out = clean.strip_brown_tags(tagged)
    assert out == ('The Fulton County Grand Jury said "no evidence" that any irregularities took place.\n\n'
                   "It isn't over, he said.")
    assert "/" not in out


def test_gcide_markup_removed():
    entry = ('Abuse \\A*buse"\\, v. t. [F. abuser; L. abusus.]\n'
             "   1. To put to a wrong use; to misapply; as, to abuse inherited gold.\n"
             "      [1913 Webster]\n\n"
             "   2. To use ill; see {Misuse}.\n      [1913 Webster]\n")
    out = clean.clean_gcide(entry)
    assert "[1913 Webster]" not in out and "\\" not in out and "{" not in out and "A*buse" not in out
    assert out.startswith("Abuse, v. t. [F. abuser; L. abusus.]")
    assert "1. To put to a wrong use; to misapply; as, to abuse inherited gold." in out
    assert "2. To use ill; see Misuse." in out


def test_dictd_entries_split_and_header_dropped():
    body = "00-database-url\n     http://x\n\nArgus\n\n   <language> A successor to {CLU}.\n\n   (1995-12-28)\n\nAriel\n\n   An array language.\n"
    entries = clean.dictd_entries(body)
    assert [e.split("\n")[0] for e in entries] == ["Argus", "Ariel"]
    assert clean.clean_dictd(entries[0]) == "Argus\n\n<language> A successor to CLU.\n\n(1995-12-28)"


def test_wordnet_line():
    line = ("10051026 18 n 02 emancipator 0 manumitter 0 003 @ 10257221 n 0000 | someone who frees others from "
            'bondage; "Lincoln is known as the Great Emancipator"  ')
    assert clean.wordnet_gloss(line) == ("emancipator, manumitter",
                                         'someone who frees others from bondage; "Lincoln is known as the Great Emancipator"', False)
    assert clean.wordnet_gloss("  1 This software and database is being provided") is None


def test_osis_markup_and_verse_refs():
    osis = ('<div type="book"/> <title type="x-ms">Matthew</title> <div sID="g1" type="x-p"/> Matthew, surnamed '
            'Levi , was a publican &amp; tax-gatherer. <div eID="g1" type="x-p"/>')
    assert clean.strip_markup(osis) == "Matthew\n\nMatthew, surnamed Levi, was a publican & tax-gatherer."
    assert clean.strip_verse_ref("Ge1:1 In the beginning God created the heaven and the earth.") == \
        "In the beginning God created the heaven and the earth."
    assert clean.strip_verse_ref("1Co13:4 Charity suffereth long") == "Charity suffereth long"


def test_unwrap_normalize_and_split():
    assert clean.unwrap("Call me\nIshmael.  Some\tyears ago\n\n\n\nnever mind.") == "Call me Ishmael. Some years ago\n\nnever mind."
    assert clean.normalize("a\x1eb\x07 c \r\n") == "ab c"
    text = "x" * 250 + "\nACT I.\nfirst\nACT II.\nsecond"
    assert clean.split_on_heading(text, r"^ACT [IVX]+") == ["x" * 250, "ACT I.\nfirst", "ACT II.\nsecond"]
    assert clean.group(["aaaa", "bbbb", "cc"], 8) == ["aaaa\n\nbbbb", "cc"]


def test_r_character_vector_decoder():
    # hand-built XDR serialization (version 3) of c("EMMA", NA, "By Jane Austen")
    def i(n):
        return n.to_bytes(4, "big", signed=True)

    raw = b"X\n" + i(3) + i(0x040201) + i(0x030500) + i(5) + b"UTF-8" + i(16) + i(3)
    for s in (b"EMMA", None, b"By Jane Austen"):
        raw += i(0x00040009) + (i(-1) if s is None else i(len(s)) + s)
    assert read_r_character_vector(raw) == ["EMMA", "", "By Jane Austen"]
    assert zlib  # the .rdb stores this zlib-compressed after a 4-byte length
