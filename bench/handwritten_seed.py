"""What a user writes instead of `rivulet backfill` for the seed's batch view:

    MOCK_API_URL=http://HOST:PORT python -m bench.handwritten_seed EVENTS DAYS OUTPUT

DuckDB reads each day's rows, 64 threads make the seed's openai call per row (one client,
its own retries off), pyarrow writes one Parquet file per day. Imports only what it uses.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from openai import OpenAI

START = datetime(2024, 10, 26)
QUERY = (
    "SELECT user_id, timestamp, text FROM read_parquet($path) "
    "WHERE timestamp >= $start AND timestamp < $end"
)


def main(events: Path, days: int, output: Path) -> None:
    client = OpenAI(api_key="bench", base_url=os.environ["MOCK_API_URL"] + "/v1", max_retries=0)

    def embed(text: str) -> list[float]:
        response = client.embeddings.create(input=text, model="text-embedding-3-small")
        return response.data[0].embedding

    con, files = duckdb.connect(), f"{events}/*.parquet"
    output.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=64) as pool:
        for day in range(days):
            start = START + timedelta(days=day)
            params = {"path": files, "start": start, "end": start + timedelta(days=1)}
            table = con.sql(QUERY, params=params).to_arrow_table()
            texts = table["text"].to_pylist()
            vectors = pa.array(list(pool.map(embed, texts)), pa.list_(pa.float32()))
            table = table.drop_columns("text").append_column("embedding", vectors)
            pq.write_table(table, output / f"{start:%Y-%m-%d}.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
