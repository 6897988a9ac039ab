// Follows a job page's server-sent events: progress, each video's status, then a reload
// when the job is final (so its results show). No inline script: the CSP forbids it.
"use strict";

function followJob(section) {
  if (section.dataset.final === "true" || !window.EventSource) {
    return;
  }
  const progress = document.getElementById("job-progress");
  const state = document.getElementById("job-state");
  const source = new EventSource(section.dataset.events);
  const update = (event) => {
    const job = JSON.parse(event.data);
    progress.max = job.total || 1;
    progress.value = job.finished;
    state.textContent = `${job.finished} of ${job.total} final`;
    for (const video of job.videos) {
      const cell = section.querySelector(`tr[data-video="${video.video_id}"] .status`);
      if (cell) {
        cell.textContent = video.status.replace("_", " ");
        cell.className = `status status-${video.status}`;
      }
    }
  };
  source.addEventListener("progress", update);
  source.addEventListener("final", (event) => {
    update(event);
    source.close();
    window.location.reload();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("job");
  if (section) {
    followJob(section);
  }
});
