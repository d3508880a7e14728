// rxjobs ui: live updates by polling. Our own small script, no external code.
// Text from the share dir is only ever set with textContent, or taken as HTML
// the server rendered and escaped (the rows of the jobs table).
"use strict";

(function () {
  const POLL_ROWS_MS = 3000;
  const POLL_JOB_MS = 1000;

  function ago(iso) {
    if (!iso) return "";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 0) return "in the future";
    const units = [["d", 86400], ["h", 3600], ["min", 60]];
    for (const [unit, size] of units) {
      if (seconds >= size) return Math.floor(seconds / size) + " " + unit + " ago";
    }
    return Math.floor(seconds) + " s ago";
  }

  function refreshAgo(root) {
    for (const el of (root || document).querySelectorAll(".ago[data-since]")) {
      el.textContent = ago(el.dataset.since);
    }
  }

  function said(text) {
    const el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function stamp() {
    return new Date().toLocaleTimeString();
  }

  // The random path the page is served under (its cookie is sent only there).
  function base() {
    const meta = document.querySelector('meta[name="rxjobs-base"]');
    return meta ? meta.getAttribute("content") : "";
  }

  async function get(url, headers) {
    const response = await fetch(url, { credentials: "same-origin", headers: headers || {} });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    return response;
  }

  // -- the jobs table ------------------------------------------------------------------
  function liveRows() {
    const body = document.getElementById("job-rows");
    if (!body) return;
    const selectAll = document.getElementById("select-all");
    const form = document.getElementById("cleanup-form");
    const boxes = () => body.querySelectorAll("input[type=checkbox][name=job_id]");
    if (selectAll) {
      selectAll.addEventListener("change", () => {
        for (const box of boxes()) box.checked = selectAll.checked;
      });
    }
    if (form) {
      form.addEventListener("submit", (event) => {
        if (![...boxes()].some((box) => box.checked)) {
          event.preventDefault();
          said("select the jobs to clean up first");
        }
      });
    }
    let busy = false;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const checked = new Set([...boxes()].filter((b) => b.checked).map((b) => b.value));
        const response = await get(window.location.href, { "X-Fragment": "rows" });
        const html = await response.text();
        body.innerHTML = html;  // rendered and escaped by the server
        for (const box of boxes()) box.checked = checked.has(box.value);
        refreshAgo(body);
        said("updated " + stamp());
      } catch (error) {
        said("live updates paused: " + error.message);
      } finally {
        busy = false;
      }
    }
    window.setInterval(tick, POLL_ROWS_MS);
  }

  // -- one job -------------------------------------------------------------------------
  function liveJob() {
    const output = document.getElementById("output");
    if (!output || output.dataset.terminal !== "no") return;
    const jobId = output.dataset.jobId;
    const state = document.getElementById("job-state");
    const reason = document.getElementById("job-reason");
    const terminal = new Set(["finished", "failed", "canceled", "missing"]);
    let busy = false;
    let timer = null;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const text = await (await get(base() + "/api/jobs/" + encodeURIComponent(jobId) + "/output")).text();
        const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
        if (output.textContent !== text) output.textContent = text;
        if (atBottom) output.scrollTop = output.scrollHeight;
        const rows = await (await get(base() + "/api/status?job_id=" + encodeURIComponent(jobId))).json();
        const row = rows[0];
        if (row && state) {
          state.textContent = row.state;
          state.className = "state state-" + row.state.replace(/[^a-z]/g, "");
          if (reason) reason.textContent = row.reason;
          if (terminal.has(row.state)) {
            window.clearInterval(timer);
            window.location.reload();  // the timeline and actions of an ended job
          }
        }
        said("updated " + stamp());
      } catch (error) {
        said("live updates paused: " + error.message);
      } finally {
        busy = false;
      }
    }
    timer = window.setInterval(tick, POLL_JOB_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    refreshAgo();
    window.setInterval(refreshAgo, 30000);
    liveRows();
    liveJob();
  });
})();
