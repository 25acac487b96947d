"""What objects cost per month in a storage class, and what moving them costs once.

Every figure comes from the price table (:class:`traceo_finops.pricing.PriceTable`); this module
only does the arithmetic, vectorised over groups of objects (``objects`` and ``bytes`` arrays, a
``small`` flag for the under-128 KB size band). It includes:

- storage at the class's $/GB-month, with the 128 KB minimum billable size of the IA classes and
  GLACIER_IR and the 40 KB per-object overhead of GLACIER and DEEP_ARCHIVE;
- Intelligent-Tiering: monitoring per 1,000 objects of 128 KB or more, and the automatic access
  tiers (infrequent after 30 days without access, archive instant after 90), blended with the
  share of objects read back each month (a read moves an object back to the frequent tier);
- reads: the bucket's ``monthly_read_ratio`` of the stored bytes is read back each month, paying
  the class's retrieval $/GB and GET (plus restore) requests — what made IA a loss in mimir#3438;
- lifecycle transition requests per 1,000 objects;
- early deletion: an object deleted or moved before the class's minimum storage duration is
  billed for the rest of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traceo_finops.pricing import ARCHIVE_CLASSES, HOURS_PER_MONTH, PriceTable, StorageClass

DAYS_PER_MONTH = HOURS_PER_MONTH / 24  # 30.42 days: the same 730-hour month as every other price here
# Intelligent-Tiering moves an object to Infrequent Access after 30 days without access and to
# Archive Instant Access after 90 (S3 user guide, "How S3 Intelligent-Tiering works").
IT_INFREQUENT_AFTER_DAYS = 30
IT_ARCHIVE_INSTANT_AFTER_DAYS = 90

# Coldness order for "never toward a warmer class"; lifecycle rules only move objects down it.
COLDNESS = {
    StorageClass.STANDARD: 0,
    StorageClass.INTELLIGENT_TIERING: 1,
    StorageClass.STANDARD_IA: 2,
    StorageClass.ONEZONE_IA: 3,
    StorageClass.GLACIER_IR: 4,
    StorageClass.GLACIER: 5,
    StorageClass.DEEP_ARCHIVE: 6,
}
# Colder in the order above, yet refused by S3 (s3.md, "direction").
FORBIDDEN_TRANSITIONS = frozenset({
    (StorageClass.INTELLIGENT_TIERING, StorageClass.STANDARD_IA),
    (StorageClass.ONEZONE_IA, StorageClass.GLACIER_IR),
})


def can_transition(src: str, dst: str) -> bool:
    """Whether a lifecycle rule can move an object from ``src`` to ``dst`` (only colder, S3's exceptions)."""
    try:
        a, b = StorageClass(src), StorageClass(dst)
    except ValueError:
        return False
    return COLDNESS[b] > COLDNESS[a] and (a, b) not in FORBIDDEN_TRANSITIONS


@dataclass(frozen=True)
class CostModel:
    """Monthly and one-time costs of groups of objects, from one price table."""

    prices: PriceTable
    monthly_read_ratio: float = 0.0

    def require(self, classes: tuple[str, ...]) -> None:
        """Fail now, naming the figure, if the table lacks anything these classes need."""
        for cls in {StorageClass.STANDARD, *map(StorageClass, classes)}:
            self.prices.storage_gb_month(cls)
            self.prices.min_storage_days(cls)
            self.prices.min_billable_bytes(cls)
            self.prices.archive_overhead_bytes(cls)
            self.prices.retrieval_per_gb(cls)
            self.prices.retrieval_per_1k(cls)
            self.prices.request_per_1k(cls, "GET")
            if cls is not StorageClass.STANDARD:
                self.prices.transition_per_1k(cls)
            if cls is StorageClass.INTELLIGENT_TIERING:
                for tier in ("frequent", "infrequent", "archive_instant"):
                    self.prices.storage_gb_month(cls, tier)
                _ = self.prices.it_monitoring_per_1k_objects

    def _gb(self, nbytes: np.ndarray) -> np.ndarray:
        return nbytes / self.prices.bytes_per_gb

    def billable_bytes(self, cls: str, objects: np.ndarray, nbytes: np.ndarray, small: np.ndarray) -> np.ndarray:
        """Bytes billed: the 128 KB minimum per object of the IA classes and GLACIER_IR applies.

        Exact per group because the size bands split at 128 KB: every object of the small band is
        billed the minimum, and no object of the large band is below it.
        """
        minimum = self.prices.min_billable_bytes(cls)
        floor = np.where(small, objects * float(minimum), 0.0)
        out: np.ndarray = np.maximum(floor, nbytes).astype(float)
        return out

    def storage_rate(self, cls: str, it_days: np.ndarray | None = None, n: int = 1) -> np.ndarray:
        """$/GB-month of ``cls``; for Intelligent-Tiering by days in the class, blended with reads."""
        if StorageClass(cls) is not StorageClass.INTELLIGENT_TIERING:
            return np.full(n, self.prices.storage_gb_month(cls))
        days = np.zeros(n) if it_days is None else it_days
        frequent = self.prices.storage_gb_month(cls, "frequent")
        tier = np.where(days >= IT_ARCHIVE_INSTANT_AFTER_DAYS, self.prices.storage_gb_month(cls, "archive_instant"),
                        np.where(days >= IT_INFREQUENT_AFTER_DAYS, self.prices.storage_gb_month(cls, "infrequent"),
                                 frequent))
        r = min(max(self.monthly_read_ratio, 0.0), 1.0)
        return r * frequent + (1 - r) * tier

    def storage_month(self, cls: str, objects: np.ndarray, nbytes: np.ndarray, small: np.ndarray,
                      it_days: np.ndarray | None = None) -> np.ndarray:
        """$/month to store the groups in ``cls``."""
        objects = np.asarray(objects, dtype=float)
        nbytes = np.asarray(nbytes, dtype=float)
        small = np.asarray(small, dtype=bool)
        c = StorageClass(cls)
        if c is StorageClass.INTELLIGENT_TIERING:
            # Objects under 128 KB are never monitored and always pay the frequent rate.
            rate = np.where(small, self.prices.storage_gb_month(c, "frequent"),
                            self.storage_rate(c, it_days, len(objects)))
            monitoring = np.where(small, 0.0, objects / 1000 * self.prices.it_monitoring_per_1k_objects)
            return self._gb(nbytes) * rate + monitoring
        usd = self._gb(self.billable_bytes(c, objects, nbytes, small)) * self.prices.storage_gb_month(c)
        if c in ARCHIVE_CLASSES:
            at_standard, at_own = self.prices.archive_overhead_bytes(c)
            usd = usd + objects * (at_own * self.prices.storage_gb_month(c)
                                   + at_standard * self.prices.storage_gb_month(StorageClass.STANDARD)) \
                / self.prices.bytes_per_gb
        return usd

    def reads_month(self, cls: str, objects: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """$/month for reading back ``monthly_read_ratio`` of the groups (retrieval + requests)."""
        r = self.monthly_read_ratio
        if r <= 0:
            return np.zeros(len(objects))
        per_1k = self.prices.request_per_1k(cls, "GET") + self.prices.retrieval_per_1k(cls)
        return r * (self._gb(np.asarray(nbytes, dtype=float)) * self.prices.retrieval_per_gb(cls)
                    + np.asarray(objects, dtype=float) / 1000 * per_1k)

    def monthly(self, cls: str, objects: np.ndarray, nbytes: np.ndarray, small: np.ndarray,
                it_days: np.ndarray | None = None) -> np.ndarray:
        out: np.ndarray = self.storage_month(cls, objects, nbytes, small, it_days) + \
            self.reads_month(cls, objects, nbytes)
        return out

    def transition(self, cls: str, objects: np.ndarray) -> np.ndarray:
        """One-time lifecycle transition requests into ``cls``."""
        return np.asarray(objects, dtype=float) / 1000 * self.prices.transition_per_1k(cls)

    def early_deletion(self, cls: str, objects: np.ndarray, nbytes: np.ndarray, small: np.ndarray,
                       days_in_class: np.ndarray) -> np.ndarray:
        """What the rest of the minimum storage duration costs for objects leaving ``cls`` after ``days_in_class``."""
        minimum = self.prices.min_storage_days(cls)
        if minimum <= 0:
            return np.zeros(len(objects))
        short = np.clip(minimum - np.asarray(days_in_class, dtype=float), 0, minimum)
        out: np.ndarray = self.storage_month(cls, objects, nbytes, small, np.full(len(objects), 1e9)) * short \
            / DAYS_PER_MONTH
        return out

