// Live countdown to each grant's end. The page shows the time left when it
// was rendered; this only keeps it current.
"use strict";
function tick() {
  for (const el of document.querySelectorAll(".countdown[data-expires]")) {
    const left = Math.floor((Date.parse(el.dataset.expires) - Date.now()) / 1000);
    if (left <= 0) { el.textContent = "ended"; continue; }
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = (h > 0 ? h + " h " : "") + String(m).padStart(2, "0") + " min " + String(s).padStart(2, "0") + " s left";
  }
}
document.addEventListener("DOMContentLoaded", () => { tick(); setInterval(tick, 1000); });
