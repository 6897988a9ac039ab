"""One router per resource: health, jobs, videos."""
