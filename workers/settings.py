"""The one typed settings object, read from the environment (and a `.env` file) at the edge.

Everything below the CLI and the worker bootstrap receives values from here as arguments;
`core` never reads the environment. Secrets (the database and broker URLs, which may carry a
password, and the Flower password) are `SecretStr`: `repr`, `str` and a JSON dump show
`**********`; the code that connects reads them with `.get_secret_value()` and shows a URL only
through `workers.services.errors.masked_url`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.pipeline import PipelineConfig
from core.video.probe import VideoLimits
from workers.services.errors import broker_url_problem, port_problem


class Settings(BaseSettings):
    """OceanStream settings; every field is `OCEANSTREAM_<NAME>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="OCEANSTREAM_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(default=Path("~/.oceanstream"), description="Default data folder.")
    database_url: SecretStr | None = Field(default=None, description="SQLAlchemy URL.")
    sqlite_busy_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a SQLite transaction waits for another process's write lock.",
    )
    storage_url: str | None = Field(default=None, description="fsspec URL for artifacts.")
    storage_mode: str = Field(
        default="private",
        pattern=r"^(private|shared|0?[67][0-7]{2})$",
        description="Local storage permissions: private (0600/0700), shared (0640/0750) or "
        "octal file bits such as 0660 (folders add search where read is given).",
    )
    broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    model: str | None = Field(default=None, description="Model bundle folder; none: built-in.")
    backbones: Path | None = Field(
        default=None, description="Installed pretrained backbones; none: home/backbones."
    )

    flower_user: str = "admin"
    flower_password: SecretStr | None = None

    num_frames: int = Field(default=16, ge=1, le=256)
    segment_seconds: float = Field(
        default=15.0,
        ge=1.0,
        le=3600.0,
        description="Length of the windows a video is analysed in, seconds (a video up to 1.5 "
        "windows long is one segment).",
    )
    segment_keyframes: bool = Field(
        default=True,
        description="Move each segment boundary onto the keyframe nearest it (within a third "
        "of a window), found in the container index; false keeps exact multiples of the window.",
    )
    watch_reconnect_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86400.0,
        description="`oceanstream watch`: how long a dropped live source is tried again (with "
        "backoff) before the watch ends; also how long a source is tried before it counts as "
        "never opened.",
    )
    flow_method: Literal["dis", "farneback"] = "dis"
    detect_width: int = Field(default=256, ge=64)
    min_face_confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    frame_max_side: int = Field(default=640, ge=64)
    keep_frames: bool = Field(
        default=False,
        description="Keep each segment's sampled frames after its features are stored (debug).",
    )
    max_video_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_duration_s: float = Field(default=3 * 60 * 60, gt=0)
    max_width: int = Field(default=3840, ge=1)
    max_height: int = Field(default=2160, ge=1)
    max_fps: float = Field(
        default=240.0,
        gt=0,
        description="Frame-rate bound: a video may hold at most max_duration_s x max_fps frames, "
        "checked on the header and again while decoding.",
    )
    stage_time_limits: dict[str, tuple[float | None, float]] = Field(
        default_factory=dict,
        description="Per-stage (soft, hard) time limits in seconds over the built-in ones, as "
        'JSON: {"ingest": [300, 360]}; a null soft limit leaves only the hard one. Read by '
        "`oceanstream worker`; a hard limit must stay below the broker's visibility timeout.",
    )

    @field_validator("database_url")
    @classmethod
    def _usable_port(cls, value: SecretStr | None) -> SecretStr | None:
        """A port out of range is one line at start (the message names the port alone)."""
        problem = port_problem(value.get_secret_value()) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("broker_url")
    @classmethod
    def _usable_broker_url(cls, value: SecretStr) -> SecretStr:
        """A URL kombu or redis-py would misread is one line at start, never echoed."""
        problem = broker_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("stage_time_limits")
    @classmethod
    def _known_stages_within_the_visibility_timeout(
        cls, value: dict[str, tuple[float | None, float]]
    ) -> dict[str, tuple[float | None, float]]:
        from workers.time_limits import stage_time_limits

        stage_time_limits(value)  # ValueError says what is wrong
        return value

    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Deliveries of a message without an acknowledgement (its consumer died "
        "each time) before it is dead-lettered instead of run again.",
    )

    # The inference pool (`oceanstream worker --queues inference`).
    max_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Most videos per model call."
    )
    max_wait_ms: float = Field(
        default=20.0, ge=0, le=60_000, description="Longest a video waits for its batch to fill."
    )
    batches_in_flight: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Batches one pool process runs at once (one gathers while others run).",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus exporter port; none: off."
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        description="Address the exporter binds; a pod sets its own IP (it has no auth).",
    )
    mixed_precision: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto: float16 compute on an accelerator, float32 on CPU."
    )
    model_refresh_s: float = Field(
        default=5.0, gt=0, description="How often the pool checks for a newly active model."
    )

    # The HTTP API (`oceanstream serve`) and erasure.
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Erase jobs and videos older than this many days (by the reconciler "
        "loop and the API process); none: keep them until deleted.",
    )
    api_max_file_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest file one upload may hold (413 past it)."
    )
    api_max_request_bytes: int = Field(
        default=8 * 1024**3, ge=1, description="Largest upload request body (413 past it)."
    )
    api_max_files: int = Field(default=100, ge=1, description="Most files in one upload.")
    api_rate_limit: int = Field(
        default=600, ge=1, description="Requests one API key may make per rate window."
    )
    api_rate_window_s: int = Field(default=60, ge=1, description="The rate window, seconds.")
    api_cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS, as JSON; empty: CORS off."
    )
    api_read_path_off: list[Literal["rate", "keys", "stamps", "cache"]] = Field(
        default_factory=list,
        description="Read-path mechanisms switched off, as JSON (docs/benchmarks.md measures "
        "each): batched rate counts, the key cache, batched result checks, the result cache.",
    )
    api_upload_dir: Path | None = Field(
        default=None, description="Where uploads are spooled before storage; none: temp dir."
    )
    callback_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Deliveries tried per completion callback."
    )
    callback_backoff_s: float = Field(
        default=2.0, gt=0, description="Pause before the 2nd attempt; doubles, up to 10 min."
    )
    callback_timeout_s: float = Field(default=10.0, gt=0, description="One attempt's timeout.")
    callback_allow_private: bool = Field(
        default=False,
        description="Let callback URLs reach loopback, private and link-local addresses.",
    )

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def effective_database_url(self) -> str:
        """The database URL to connect with (it may carry a password: never show it as is)."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home_dir / 'oceanstream.db'}"

    @property
    def effective_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return f"file://{self.home_dir / 'storage'}"

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            segment_seconds=self.segment_seconds,
            segment_keyframes=self.segment_keyframes,
            num_frames=self.num_frames,
            flow_method=self.flow_method,
            detect_width=self.detect_width,
            min_face_confidence=self.min_face_confidence,
            frame_max_side=self.frame_max_side,
            keep_frames=self.keep_frames,
            limits=VideoLimits(
                max_bytes=self.max_video_bytes,
                max_duration_s=self.max_duration_s,
                max_width=self.max_width,
                max_height=self.max_height,
                max_fps=self.max_fps,
            ),
        )
