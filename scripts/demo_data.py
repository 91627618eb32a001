"""Put the GetBatch tutorial's data with the official SDK, then read it back with aisbatchfs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aistore.sdk import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aisbatchfs.ais import AisClient, BucketRef  # noqa: E402
from tests.helpers import put_tutorial  # noqa: E402

endpoint = os.environ["AIS_ENDPOINT"]
sdk = Client(endpoint)
objs = sdk.bucket("demo-objects").create(exist_ok=True)
archs = sdk.bucket("demo-archives").create(exist_ok=True)
put_tutorial(objs, archs)

client = AisClient.from_env(endpoint)
for bucket in (BucketRef("demo-objects"), BucketRef("demo-archives")):
    print(f"{bucket}:")
    for e in client.list_objects(bucket, archives=True):
        print(f"  {e.name:32} {e.size:>7}  {'member' if e.in_archive else 'object'}")

batch = client.batch(bucket=BucketRef("demo-objects"))
for i in range(1, 6):
    batch.add(f"test-obj-{i}")
for j in range(1, 4):
    batch.add(f"archive-{j}.tar", bucket=BucketRef("demo-archives"), archpath="file_1.txt")
print(f"\none GetBatch of {len(batch.items)} items, in request order:")
for out, data in batch.get():
    it = out.item
    name = f"{(it.bucket or batch.bucket).name}/{it.objname}" + (f"/{it.archpath}" if it.archpath else "")
    print(f"  {name:40} {data!r}")
print(f"\nrequests made by aisbatchfs: {client.counters()}")
