"""DEX / EVA-DTS vending audit files: a lenient parser (never raises) and a writer."""

from fleetcore_protocol.dex.model import (
    DAMAGING,
    Audit,
    CashFlow,
    Counter,
    CrcCheck,
    Currency,
    DexFile,
    DexWarning,
    Event,
    Identity,
    PaymentBreakdown,
    PriceLine,
    Product,
    RawSegment,
    ReadInfo,
    SoldOut,
    WarningCode,
)
from fleetcore_protocol.dex.parser import parse

__all__ = [
    "DAMAGING",
    "Audit",
    "CashFlow",
    "Counter",
    "CrcCheck",
    "Currency",
    "DexFile",
    "DexWarning",
    "Event",
    "Identity",
    "PaymentBreakdown",
    "PriceLine",
    "Product",
    "RawSegment",
    "ReadInfo",
    "SoldOut",
    "WarningCode",
    "parse",
]
