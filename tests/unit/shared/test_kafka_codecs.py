"""Every compression codec a Kafka producer may choose can be read by our consumers.

A real Kafka cluster (deploy/compose, deploy/kubernetes) hands consumers record batches
compressed the way the product app's producer wrote them; kafka-python decodes them only
when the codec's library is installed, and otherwise raises on every poll of that
partition. (The embedded Tansu broker stores batches decompressed, so the broker tests
cannot show this; these tests build and read the batches kafka-python builds.)
"""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

CODECS = {
    "gzip": DefaultRecordBatch.CODEC_GZIP,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
    "lz4": DefaultRecordBatch.CODEC_LZ4,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_batch_compressed_with_each_codec_decodes(codec):
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec],
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    values = [b'{"event_id": "e%d", "account_id": "acme", "name": "login"}' % i for i in range(50)]
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=1_700_000_000_000, key=None, value=value, headers=[])
    raw = bytes(builder.build())
    batch = DefaultRecordBatch(raw)
    assert batch.compression_type == CODECS[codec]
    assert [record.value for record in batch] == values
