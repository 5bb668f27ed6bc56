// History: jobs still queued or running are refreshed in place (state, progress, then their
// images) by polling the page's JSON, which counts against the poll limit, never the plan's
// requests per minute. The interval grows from 1 s to 5 s and follows Retry-After.
(function () {
  "use strict";
  const script = document.currentScript;
  const url = script && script.dataset.states;
  if (!url) return;
  const FIRST_MS = 1000;
  const MAX_MS = 5000;
  const WAITING = ["queued", "processing"];

  function card(id) {
    return document.querySelector(`[data-job="${id}"]`);
  }

  function waitingIds() {
    return [...document.querySelectorAll("[data-job]")]
      .filter((node) => {
        const badge = node.querySelector(".badge");
        return badge && WAITING.includes(badge.textContent.trim());
      })
      .map((node) => node.dataset.job);
  }

  function show(job) {
    const node = card(job.id);
    if (!node) return;
    const badge = node.querySelector(".badge");
    badge.textContent = job.status;
    badge.className = "badge " + job.status;
    const placeholder = node.querySelector(".no-images, .thumbs .muted");
    if (WAITING.includes(job.status)) {
      if (placeholder) {
        placeholder.textContent = job.progress === null ? job.status + "…"
          : job.status + "… " + Math.round(job.progress * 100) + "%";
      }
      return;
    }
    node.dataset.refreshed = job.status;
    if (job.thumbnails.length && placeholder) {
      const thumbs = placeholder.parentElement;
      placeholder.remove();
      job.thumbnails.forEach((src, i) => {
        const link = document.createElement("a");
        link.href = src;
        const img = document.createElement("img");
        img.src = src;
        img.alt = "Job " + job.id + " image " + (i + 1);
        link.append(img);
        thumbs.append(link);
      });
    } else if (placeholder) {
      placeholder.textContent = job.error || job.status;
    }
  }

  async function refresh(delay) {
    const ids = waitingIds();
    if (!ids.length) return;
    let wait = Math.min(delay * 1.5, MAX_MS);
    try {
      const response = await fetch(url + "?ids=" + ids.join(","), { credentials: "same-origin" });
      const after = parseInt(response.headers.get("Retry-After") || "0", 10);
      if (response.status === 429) wait = Math.max(after * 1000, MAX_MS);
      else if (response.ok) (await response.json()).jobs.forEach(show);
    } catch (error) {
      wait = MAX_MS;
    }
    setTimeout(() => refresh(wait), delay);
  }

  refresh(FIRST_MS);
})();
