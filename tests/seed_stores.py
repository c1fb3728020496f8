"""The seeds' persistence store (seed 002, Example 4-9), as a user writes it.

``ray.cloudpickle`` becomes ``cloudpickle``; nothing else changes. Shared by the
tests of the stores and of durable actors (workers import it by name, too).
"""

from __future__ import annotations

from os.path import exists

import cloudpickle


class BasePersitence:
    def exists(self, key: str) -> bool:
        pass

    def save(self, key: str, data: dict):
        pass

    def restore(self, key: str) -> dict:
        pass


class FilePersistence(BasePersitence):
    def __init__(self, basedir: str = "."):
        self.basedir = basedir

    def exists(self, key: str) -> bool:
        return exists(self.basedir + "/" + key)

    def save(self, key: str, data: dict):
        bytes = cloudpickle.dumps(data)
        with open(self.basedir + "/" + key, "wb") as f:
            f.write(bytes)

    def restore(self, key: str) -> dict:
        if not self.exists(key):
            return None
        else:
            with open(self.basedir + "/" + key, "rb") as f:
                bytes = f.read()
            return cloudpickle.loads(bytes)
