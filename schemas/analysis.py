"""Call analytics as the API shows them: talk, silence and overtalk per call, health flags,
waveform peaks and the search filters on them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ChannelRole = Literal["agent", "customer", "other"]
Flag = Literal["silent_channel", "one_sided", "clipping", "dropout", "mono_mixdown"]
FLAGS: tuple[Flag, ...] = ("silent_channel", "one_sided", "clipping", "dropout",
                           "mono_mixdown")


class ChannelTalk(BaseModel):
    role: ChannelRole | None = Field(description="Who the channel carries, if known.")
    talk_s: float = Field(description="Seconds the channel's party is heard talking.")
    talk_ratio: float = Field(description="talk_s as a share of the whole call (0..1).")


class RecordingAnalysis(BaseModel):
    channels: list[ChannelTalk]
    silence_ratio: float = Field(description="Share of the call in which nobody talks.")
    longest_silence_s: float
    overtalk_s: float = Field(description="Seconds in which two channels talk at once.")
    overtalk_count: int = Field(description="Stretches of overtalk.")
    flags: list[Flag] = Field(description="Health problems found in the audio.")


class ChannelPeaks(BaseModel):
    role: ChannelRole | None
    min: list[float] = Field(description="Lowest sample of each interval, -1..1.")
    max: list[float] = Field(description="Highest sample of each interval, -1..1.")


class Peaks(BaseModel):
    interval_ms: int = 10
    channels: list[ChannelPeaks]
