"""Parquet segments merged byte for byte (``Parquet.merge``) and the Thrift compact codec under it.

The merged file is checked with pyarrow (rows, row groups, statistics, offsets, the bytes of
every column chunk against its source's) and DuckDB (page index and bloom filter offsets, bloom
filter probes); the codec against bytes derived by hand from the compact protocol spec and
against every footer, page header and page index pyarrow writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from libs.formats import thrift
from libs.formats.base import Opener
from libs.formats.columnar import FOOTER_READ, Parquet
from libs.formats.thrift import (
    BINARY,
    BOOL,
    BYTE,
    DOUBLE,
    I16,
    I32,
    I64,
    LIST,
    MAP,
    SET,
    STRUCT,
    UUID,
    Struct,
    ThriftError,
    ThriftList,
    ThriftMap,
)

ORDER_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("user_id", pa.int32()),
        ("sku", pa.string()),
        ("qty", pa.int32()),
        ("price", pa.decimal128(12, 2)),
        ("status", pa.string()),
        ("note", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("tags", pa.list_(pa.int32())),
        ("address", pa.struct([("city", pa.string()), ("zip", pa.int32())])),
    ]
)
STATUSES = ("new", "paid", "packed", "shipped", "delivered")
EPOCH = dt.datetime(2024, 1, 1)


def _orders(start: int, rows: int, *, repeat: bool) -> pa.Table:
    """Orders ``start`` to ``start + rows``, with NULLs; ``repeat``: statuses repeat (they get a
    dictionary), else each is distinct (written plain)."""
    ids = range(start, start + rows)
    return pa.table(
        {
            "id": list(ids),
            "user_id": [None if i % 7 == 0 else i % 1000 for i in ids],
            "sku": [f"SKU-{i * 7919 % 100_000:06d}" for i in ids],
            "qty": [i % 5 + 1 for i in ids],
            "price": [None if i % 11 == 0 else Decimal(i % 100_000) / 100 for i in ids],
            "status": [STATUSES[i % 5] if repeat else f"status {i}" for i in ids],
            "note": [f"order {i} " + "x" * (i % 90) for i in ids],
            "created_at": [EPOCH + dt.timedelta(seconds=i, microseconds=i % 1000) for i in ids],
            "tags": [None if i % 13 == 0 else list(range(i % 4)) for i in ids],
            "address": [
                None if i % 17 == 0 else {"city": f"city {i % 50}", "zip": 10_000 + i % 999}
                for i in ids
            ],
        },
        schema=ORDER_SCHEMA,
    )


def _segment(path: Path, table: pa.Table, **options: Any) -> Path:
    """``table`` written by the project's own Parquet writer, in small batches."""
    writer = Parquet().writer(path.open("wb"), table.schema, {"compress": "snappy", **options})
    for batch in table.to_batches(max_chunksize=250):
        writer.write(batch)
    writer.close()
    return path


def _opener(path: Path) -> Opener:
    return lambda: path.open("rb")


def _merge(sources: list[Path], target: Path) -> Path:
    openers: list[Opener] = [_opener(p) for p in sources]
    Parquet().merge(openers, target.open("wb"), {"compress": "snappy"})
    return target


def _chunks(path: Path) -> list[list[pq.ColumnChunkMetaData]]:
    metadata = pq.ParquetFile(path).metadata
    return [
        [metadata.row_group(g).column(c) for c in range(metadata.num_columns)]
        for g in range(metadata.num_row_groups)
    ]


def _span(chunk: pq.ColumnChunkMetaData) -> tuple[int, int]:
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return start, start + chunk.total_compressed_size


def _footer(data: bytes) -> tuple[Struct, int]:
    """The FileMetaData of a Parquet file and where it starts."""
    length = int.from_bytes(data[-8:-4], "little")
    footer, _ = thrift.decode(data[-8 - length : -8])
    return footer, len(data) - 8 - length


def _assert_concatenated(merged: Path, sources: list[Path]) -> None:
    """``merged`` holds the row groups of ``sources`` in order, their column chunks byte for
    byte (so nothing was re-encoded), each where its metadata says."""
    data = merged.read_bytes()
    _, footer_start = _footer(data)
    got = [chunk for group in _chunks(merged) for chunk in group]
    expected = [
        (source.read_bytes(), chunk) for source in sources for g in _chunks(source) for chunk in g
    ]
    assert len(got) == len(expected)
    for new, (old_data, old) in zip(got, expected, strict=True):
        start, end = _span(new)
        assert 4 <= start < end <= footer_start
        old_start, old_end = _span(old)
        assert data[start:end] == old_data[old_start:old_end]
        assert new.data_page_offset - old.data_page_offset == start - old_start
        moved = dict.fromkeys(("data_page_offset", "dictionary_page_offset", "bloom_filter_offset"))
        assert new.to_dict() | moved == old.to_dict() | moved


# -- merging -------------------------------------------------------------------------------------


def test_segments_are_concatenated_row_group_by_row_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tables = [
        _orders(0, 2000, repeat=True),
        _orders(2000, 1500, repeat=False),
        _orders(3500, 1800, repeat=True),
        _orders(5300, 900, repeat=True),
    ]
    options: list[dict[str, Any]] = [{}, {}, {"enableDictionary": False}, {"rowGroupSize": 100}]
    sources = [
        _segment(tmp_path / f"{n}.parquet", table, **{"rowGroupSize": 700, **extra})
        for n, (table, extra) in enumerate(zip(tables, options, strict=True))
    ]
    dictionaries = [
        {chunk.path_in_schema for chunk in _chunks(s)[0] if chunk.has_dictionary_page}
        for s in sources
    ]
    assert "status" in dictionaries[0]
    assert "status" not in dictionaries[1]
    assert dictionaries[2] == set()
    with caplog.at_level(logging.DEBUG, logger="libs.formats.columnar"):
        merged = _merge(sources, tmp_path / "merged.parquet")
    assert "re-encoded" not in caplog.text

    parquet = pq.ParquetFile(merged)
    assert parquet.read().equals(pa.concat_tables(pq.read_table(s) for s in sources))
    assert parquet.read().equals(pa.concat_tables(tables))
    metadata = parquet.metadata
    assert metadata.num_rows == sum(t.num_rows for t in tables)
    assert metadata.num_row_groups == sum(pq.ParquetFile(s).num_row_groups for s in sources)
    groups = [
        pq.ParquetFile(s).metadata.row_group(g)
        for s in sources
        for g in range(pq.ParquetFile(s).num_row_groups)
    ]
    for index, group in enumerate(groups):
        assert metadata.row_group(index).num_rows == group.num_rows
        for column in range(metadata.num_columns):
            new, old = metadata.row_group(index).column(column), group.column(column)
            assert new.statistics.to_dict() == old.statistics.to_dict()
            assert new.has_dictionary_page == old.has_dictionary_page
    _assert_concatenated(merged, sources)
    # each row group reads alone, and the project reads the file from any row
    for index in range(metadata.num_row_groups):
        assert parquet.read_row_group(index).num_rows == groups[index].num_rows
    with merged.open("rb") as stream:
        assert len(Parquet().units(stream) or []) == metadata.num_row_groups
    with merged.open("rb") as stream:
        rest = pa.Table.from_batches(list(Parquet().read(stream, 2100, 1000, {})))
    assert rest.equals(pa.concat_tables(tables).slice(2100))
    # RowGroup.file_offset: the first page of the group
    footer, _ = _footer(merged.read_bytes())
    rows = footer.get(4)
    assert isinstance(rows, ThriftList)
    for group_struct, chunks in zip(rows.items, _chunks(merged), strict=True):
        assert isinstance(group_struct, Struct)
        assert group_struct.get(5) == min(_span(chunk)[0] for chunk in chunks)


def test_an_empty_segment_adds_nothing(tmp_path: Path) -> None:
    empty = _segment(tmp_path / "empty.parquet", ORDER_SCHEMA.empty_table())
    full = _segment(tmp_path / "full.parquet", _orders(0, 1000, repeat=True))
    merged = _merge([empty, full, empty], tmp_path / "merged.parquet")
    assert pq.read_table(merged).equals(pq.read_table(full))
    _assert_concatenated(merged, [empty, full, empty])


def _page_indexed(path: Path, table: pa.Table) -> Path:
    """Page indexes, bloom filters, small pages: what the merge moves besides the row groups."""
    with pq.ParquetWriter(
        path,
        table.schema,
        write_page_index=True,
        max_rows_per_page=100,
        bloom_filter_options={"id": {"ndv": 10_000, "fpp": 0.01}, "sku": True},
    ) as writer:
        for offset in range(0, table.num_rows, 600):
            writer.write_table(table.slice(offset, 600))
    return path


def _duckdb_chunks(path: Path) -> list[dict[str, Any]]:
    duckdb = pytest.importorskip("duckdb")
    relation = duckdb.sql(
        f"select * from parquet_metadata('{path}') order by row_group_id, column_id"
    )
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def test_page_indexes_and_bloom_filters_move_with_their_pages(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    tables = [_orders(0, 1500, repeat=True), _orders(1500, 1300, repeat=False)]
    sources = [_page_indexed(tmp_path / f"{n}.parquet", t) for n, t in enumerate(tables)]
    merged = _merge([*sources, sources[0]], tmp_path / "merged.parquet")
    sources.append(sources[0])
    assert pq.read_table(merged).equals(pa.concat_tables(pq.read_table(s) for s in sources))
    _assert_concatenated(merged, sources)
    data = merged.read_bytes()
    new = _duckdb_chunks(merged)
    old = [(s.read_bytes(), chunk) for s in sources for chunk in _duckdb_chunks(s)]
    assert len(new) == len(old)
    indexed = blooms = 0  # pages, bloom filters
    for chunk, (old_data, old_chunk) in zip(new, old, strict=True):
        shift = chunk["data_page_offset"] - old_chunk["data_page_offset"]
        # the column index and the bloom filter: copied as they are
        for key in ("column_index", "bloom_filter"):
            if old_chunk[f"{key}_offset"] is None:
                continue
            start, length = chunk[f"{key}_offset"], chunk[f"{key}_length"]
            old_start = old_chunk[f"{key}_offset"]
            assert length == old_chunk[f"{key}_length"]
            assert data[start : start + length] == old_data[old_start : old_start + length]
            blooms += key == "bloom_filter"
        # the offset index: every page where it was, moved with its column chunk
        start, length = chunk["offset_index_offset"], chunk["offset_index_length"]
        pages = _page_locations(data[start : start + length])
        old_start, old_length = old_chunk["offset_index_offset"], old_chunk["offset_index_length"]
        old_pages = _page_locations(old_data[old_start : old_start + old_length])
        assert len(pages) == len(old_pages) >= 1
        indexed += len(pages)
        for (offset, size, first_row), (old_offset, old_size, old_first) in zip(
            pages, old_pages, strict=True
        ):
            assert (size, first_row) == (old_size, old_first)
            assert offset - old_offset == shift
            assert data[offset : offset + size] == old_data[old_offset : old_offset + size]
    assert blooms == 2 * pq.read_metadata(merged).num_row_groups
    assert indexed > 2 * len(new)
    # DuckDB reads the moved bloom filters: the first id of each row group is in its filter
    # only (but for a false positive in a hundred), an id of no row group in none
    probe = "select row_group_id, bloom_filter_excludes from parquet_bloom_probe('{}', 'id', {})"
    merged_groups = pq.ParquetFile(merged).metadata
    first = 0
    for group in range(merged_groups.num_row_groups):
        first_id = pq.read_table(merged, columns=["id"])["id"][first].as_py()
        excludes = dict(duckdb.sql(probe.format(merged, first_id)).fetchall())
        assert excludes[group] is False
        assert sum(excludes.values()) >= len(excludes) - 2
        first += merged_groups.row_group(group).num_rows
    excludes = dict(duckdb.sql(probe.format(merged, -12_345)).fetchall())
    assert sum(excludes.values()) >= len(excludes) - 1


def test_long_footers_and_page_indexes_far_from_the_end(tmp_path: Path) -> None:
    """Footers longer than the first read from the end, offset indexes before it."""
    sources = []
    for n in range(3):
        path = tmp_path / f"{n}.parquet"
        table = _orders(n * 1000, 1000, repeat=n != 1)
        pq.write_table(table, path, row_group_size=12, write_page_index=True)
        sources.append(path)
    footer_length = int.from_bytes(sources[0].read_bytes()[-8:-4], "little")
    assert footer_length > FOOTER_READ
    merged = _merge(sources, tmp_path / "merged.parquet")
    assert pq.read_table(merged).equals(pa.concat_tables(pq.read_table(s) for s in sources))
    _assert_concatenated(merged, sources)
    data = merged.read_bytes()
    for chunk in _duckdb_chunks(merged):
        start, length = chunk["offset_index_offset"], chunk["offset_index_length"]
        for offset, size, _ in _page_locations(data[start : start + length]):
            header, stop = thrift.decode(data, offset)  # a page header, as long as it says
            compressed = header.get(3)
            assert isinstance(compressed, int)
            assert stop + compressed == offset + size


def _page_locations(data: bytes) -> list[tuple[int, int, int]]:
    """An OffsetIndex's pages: (offset, compressed size, first row)."""
    index, end = thrift.decode(data)
    assert end == len(data)
    pages = index.get(1)
    assert isinstance(pages, ThriftList)
    located = []
    for page in pages.items:
        assert isinstance(page, Struct)
        offset, size, first = page.get(1), page.get(2), page.get(3)
        assert isinstance(offset, int)
        assert isinstance(size, int)
        assert isinstance(first, int)
        located.append((offset, size, first))
    return located


def _with_ordinals(path: Path) -> Path:
    """``path`` rewritten with RowGroup.ordinal set (pyarrow writes it only when encrypting)."""
    data = path.read_bytes()
    footer, start = _footer(data)
    groups = footer.get(4)
    assert isinstance(groups, ThriftList)
    for ordinal, group in enumerate(groups.items):
        assert isinstance(group, Struct)
        group.set(7, I16, ordinal)
    encoded = thrift.encode(footer)
    path.write_bytes(data[:start] + encoded + len(encoded).to_bytes(4, "little") + b"PAR1")
    return path


def test_row_group_ordinals_are_renumbered(tmp_path: Path) -> None:
    sources = [
        _with_ordinals(
            _segment(
                tmp_path / f"{n}.parquet", _orders(n * 1000, 1000, repeat=True), rowGroupSize=300
            )
        )
        for n in range(3)
    ]
    per_source = [pq.ParquetFile(s).num_row_groups for s in sources]
    assert min(per_source) > 1
    merged = _merge(sources, tmp_path / "merged.parquet")
    assert pq.read_table(merged).equals(pa.concat_tables(pq.read_table(s) for s in sources))
    groups = _footer(merged.read_bytes())[0].get(4)
    assert isinstance(groups, ThriftList)
    ordinals = [group.get(7) for group in groups.items if isinstance(group, Struct)]
    assert ordinals == list(range(sum(per_source)))


@pytest.mark.parametrize(
    ("other", "differs"),
    [
        ({"store_decimal_as_integer": True}, "schema"),  # same Arrow types, another Parquet one
        ({"store_schema": False}, "key_value_metadata"),  # no ARROW:schema
    ],
)
def test_a_segment_with_another_schema_is_reencoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, other: dict[str, Any], differs: str
) -> None:
    tables = [_orders(n * 500, 500, repeat=True) for n in range(3)]
    sources = [_segment(tmp_path / f"{n}.parquet", t) for n, t in enumerate(tables[:2])]
    odd = tmp_path / "odd.parquet"
    pq.write_table(tables[2], odd, **other)
    with caplog.at_level(logging.DEBUG, logger="libs.formats.columnar"):
        merged = _merge([*sources, odd], tmp_path / "merged.parquet")
    assert f"file 3 has another {differs} than file 1" in caplog.text
    assert pq.read_table(merged).equals(pa.concat_tables(tables))


def test_an_encrypted_footer_is_not_concatenated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _segment(tmp_path / "a.parquet", _orders(0, 100, repeat=True))
    encrypted = tmp_path / "b.parquet"
    encrypted.write_bytes(source.read_bytes()[:-4] + b"PARE")
    with caplog.at_level(logging.DEBUG, logger="libs.formats.columnar"), pytest.raises(OSError):
        _merge([source, encrypted], tmp_path / "merged.parquet")  # pyarrow cannot read it
    assert "encrypted footer" in caplog.text


# -- the Thrift compact protocol -----------------------------------------------------------------


def _field(field_id: int, kind: int, value: thrift.Value) -> Struct:
    return Struct([(field_id, kind, value)])


HAND_ENCODED: list[tuple[Struct, bytes]] = [
    # short field header: delta 1, type i32 (5); zigzag(1) = 2; stop
    (_field(1, I32, 1), b"\x15\x02\x00"),
    # long form (delta 20 > 15): type byte, zigzag i16 id 20 = 40; zigzag(-1) = 1
    (_field(20, I64, -1), b"\x06\x28\x01\x00"),
    # bools live in the field header: 1 true, 2 false
    (Struct([(1, BOOL, True), (2, BOOL, False)]), b"\x11\x12\x00"),
    # a negative delta is the long form too
    (Struct([(2, I32, 0), (1, I32, 0)]), b"\x25\x00\x05\x02\x00\x00"),
    (_field(1, BYTE, -1), b"\x13\xff\x00"),
    # zigzag(300) = 600 = 0b100_1011000: varint 0xd8 0x04
    (_field(1, I16, 300), b"\x14\xd8\x04\x00"),
    (_field(1, I64, 2**62), b"\x16" + b"\x80" * 9 + b"\x01\x00"),
    (_field(1, I64, -(2**63)), b"\x16" + b"\xff" * 9 + b"\x01\x00"),
    (_field(1, DOUBLE, 1.5), b"\x17" + struct.pack("<d", 1.5) + b"\x00"),
    (_field(1, BINARY, b"ab"), b"\x18\x02ab\x00"),
    (_field(1, UUID, bytes(range(16))), b"\x1d" + bytes(range(16)) + b"\x00"),
    # list<bool>: size 2, element type 1; elements one byte each, 1 true 2 false
    (_field(1, LIST, ThriftList(BOOL, [True, False])), b"\x19\x21\x01\x02\x00"),
    (_field(1, LIST, ThriftList(I32, [])), b"\x19\x05\x00"),
    # 15 elements: the long list header 0xf_ + varint size
    (_field(1, LIST, ThriftList(I32, [0] * 15)), b"\x19\xf5\x0f" + b"\x00" * 15 + b"\x00"),
    (_field(1, SET, ThriftList(I32, [1], SET)), b"\x1a\x15\x02\x00"),
    # map: varint size, key type << 4 | value type, pairs; an empty map is one 0 byte
    (_field(1, MAP, ThriftMap(BINARY, I32, [(b"k", 1)])), b"\x1b\x01\x85\x01k\x02\x00"),
    (_field(1, MAP, ThriftMap(I32, I32)), b"\x1b\x00\x00"),
    # a nested struct counts its field ids from 0 again, the outer one goes on from its own
    (
        Struct([(1, STRUCT, _field(3, I32, 1)), (2, LIST, ThriftList(STRUCT, [Struct()]))]),
        b"\x1c\x35\x02\x00\x19\x1c\x00\x00",
    ),
]


@pytest.mark.parametrize(("value", "encoded"), HAND_ENCODED)
def test_compact_protocol_bytes_as_the_spec_gives_them(value: Struct, encoded: bytes) -> None:
    assert thrift.encode(value) == encoded
    assert thrift.decode(b"junk" + encoded + b"more", 4) == (value, 4 + len(encoded))


def test_compact_protocol_refuses_what_it_cannot_read_or_write() -> None:
    assert thrift.decode(b"\x19\x21\x01\x00\x00")[0] == _field(
        1, LIST, ThriftList(BOOL, [True, False])
    )
    for broken in (b"", b"\x15", b"\x18\x05ab", b"\x1f\x00", b"\x16" + b"\xff" * 11):
        with pytest.raises(ThriftError):
            thrift.decode(broken)
    with pytest.raises(ThriftError):
        thrift.encode(_field(1, I32, 2**31))
    with pytest.raises(ThriftError):
        thrift.encode(_field(1, I32, b"not a number"))


WRITERS: dict[str, dict[str, Any]] = {
    "default": {},
    "no statistics, no dictionary": {"write_statistics": False, "use_dictionary": False},
    "page index": {"write_page_index": True, "max_rows_per_page": 200},
    "bloom filters": {"bloom_filter_options": {"id": True, "note": True}},
    "metadata, no arrow schema": {"store_schema": False, "metadata": {b"team": b"sync" * 40}},
    "int96, v2 pages, zstd": {
        "use_deprecated_int96_timestamps": True,
        "data_page_version": "2.0",
        "compression": "zstd",
        "write_page_checksum": True,
    },
    "sorted, decimals as integers": {
        "sorting_columns": [pq.SortingColumn(0)],
        "store_decimal_as_integer": True,
    },
    "wide": {"wide": True},
}


def _written(path: Path, options: dict[str, Any]) -> bytes:
    options = dict(options)
    table = pa.concat_tables([_orders(0, 1000, repeat=True), _orders(1000, 1000, repeat=False)])
    if options.pop("wide", False):  # more than 14 columns: long list headers
        table = pa.table({f"c{n}": pa.array(range(n, n + 100)) for n in range(40)})
    metadata = options.pop("metadata", None)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path, row_group_size=700, **options)
    return path.read_bytes()


def _round_trips(data: bytes, start: int, end: int | None = None) -> int:
    """Decode the struct at ``data[start:]`` and encode it again: the same bytes."""
    value, stop = thrift.decode(data, start)
    assert end is None or stop == end
    assert thrift.encode(value) == data[start:stop]
    return stop


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_footer_page_header_and_index_round_trips_byte_for_byte(
    tmp_path: Path, writer: str
) -> None:
    data = _written(tmp_path / "file.parquet", WRITERS[writer])
    _, footer_start = _footer(data)
    _round_trips(data, footer_start, len(data) - 8)
    checked = 0
    for group in _chunks(tmp_path / "file.parquet"):
        for chunk in group:
            position, end = _span(chunk)
            while position < end:  # page headers, with their statistics and checksums
                header, stop = thrift.decode(data, position)
                assert thrift.encode(header) == data[position:stop]
                size = header.get(3)  # compressed_page_size
                assert isinstance(size, int)
                position = stop + size
                checked += 1
            assert position == end
            if chunk.bloom_filter_offset is not None:
                _round_trips(data, chunk.bloom_filter_offset)  # the header before the bitset
                checked += 1
    if WRITERS[writer].get("write_page_index"):
        for chunk in _duckdb_chunks(tmp_path / "file.parquet"):
            for key in ("column_index", "offset_index"):
                start = chunk[f"{key}_offset"]
                _round_trips(data, start, start + chunk[f"{key}_length"])
                checked += 1
    assert checked > 10
