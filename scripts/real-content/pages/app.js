// Renders one state of the app from the URL hash, e.g. app.html#typing=12:
//   typing=N  the work-order form with N keystrokes typed (two per frame)
//   clock=N   the dashboard N seconds after 09:41:00 (clock, progress bar)
//   scroll=N  the shift report scrolled by 20*N pixels in the main area
//   page=N    page N of the app (a different module/page per frame)
//   term=N    a terminal-looking page with N lines of build output
"use strict";
const params = new URLSearchParams(location.hash.slice(1));
const num = (k) => parseInt(params.get(k) || "0", 10);

let seed = 12345;
function rnd() { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; }
function pick(a) { return a[Math.floor(rnd() * a.length)]; }

const SECTIONS = {
  Operations: ["Dashboard", "Devices", "Alarms", "Trends", "Shift report"],
  Maintenance: ["Work orders", "Spare parts", "Calendar"],
  Administration: ["Users", "Settings", "Audit log"],
};
function nav(active) {
  let h = "";
  for (const [sec, items] of Object.entries(SECTIONS)) {
    h += `<h4>${sec}</h4>`;
    for (const it of items) {
      const badge = it === "Alarms" ? '<span class="badge">3</span>' : "";
      h += `<a class="${it === active ? "on" : ""}"><i></i>${it}${badge}</a>`;
    }
  }
  document.getElementById("nav").innerHTML = h;
}
const main = document.getElementById("main");
function clock(s) {
  const t = 9 * 3600 + 41 * 60 + s;
  const p = (n) => String(n).padStart(2, "0");
  document.getElementById("clock").textContent =
    `${p(Math.floor(t / 3600) % 24)}:${p(Math.floor(t / 60) % 60)}:${p(t % 60)}`;
}

const DEVICES = ["Pump P-101", "Pump P-102", "Mixer M-4", "Conveyor C-12", "Boiler B-1", "Chiller CH-2",
  "Valve V-330", "Press HP-7", "Filler F-3", "Labeler L-1", "Compressor K-5", "Dryer D-9", "Oven O-2", "Robot R-14"];
const STATES = [["Running", "ok"], ["Running", "ok"], ["Idle", "warn"], ["Fault", "bad"], ["Running", "ok"]];
function deviceRows(n) {
  let h = "";
  for (let i = 0; i < n; i++) {
    const [st, cls] = pick(STATES);
    h += `<tr><td>${DEVICES[i % DEVICES.length]}${i >= DEVICES.length ? " #" + (1 + Math.floor(i / DEVICES.length)) : ""}</td>` +
      `<td>Hall ${1 + (i % 4)}, line ${1 + (i % 3)}</td><td class="${cls}">${st}</td>` +
      `<td>${(20 + rnd() * 60).toFixed(1)} °C</td><td>${(rnd() * 6).toFixed(2)} bar</td>` +
      `<td>${Math.floor(rnd() * 9000)} h</td><td>2026-11-${String(1 + (i % 28)).padStart(2, "0")} ${String(i % 24).padStart(2, "0")}:${String((i * 7) % 60).padStart(2, "0")}</td></tr>`;
  }
  return `<table><tr><th>Device</th><th>Location</th><th>State</th><th>Temperature</th><th>Pressure</th><th>Hours</th><th>Last service</th></tr>${h}</table>`;
}
function cards(vals) {
  return `<div class="cards">${vals.map(([v, l]) => `<div class="card"><div class="v">${v}</div><div class="l">${l}</div></div>`).join("")}</div>`;
}
function chart(w, h, n, color) {
  let pts = [], y = h / 2;
  for (let i = 0; i <= n; i++) { y = Math.max(10, Math.min(h - 10, y + (rnd() - 0.5) * 40)); pts.push(`${(i * w / n).toFixed(1)},${y.toFixed(1)}`); }
  let grid = "";
  for (let g = 1; g < 5; g++) grid += `<line x1="0" x2="${w}" y1="${g * h / 5}" y2="${g * h / 5}" stroke="#e4e7eb"/>`;
  return `<svg width="${w}" height="${h}">${grid}<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.join(" ")}"/></svg>`;
}
const PROSE = ["The night shift reported stable operation on lines 1 and 3 with a short stop on line 2 caused by a jammed label roll.",
  "Pressure in the main steam header stayed between 5.8 and 6.1 bar; the boiler feed pump was switched to its standby unit at 02:15 for the weekly test.",
  "Quality control rejected 14 cartons for misaligned labels; the labeler sensor was cleaned and re-taught, after which no further rejects occurred.",
  "Chiller CH-2 showed a rising condenser temperature in the early morning. Maintenance has opened a work order to inspect the cooling tower fans.",
  "Energy use per produced unit fell by 3.2 % compared with the previous week, mostly due to the new compressor schedule.",
  "Two operators completed the lock-out/tag-out refresher training. The next safety walk is planned for Thursday at 10:00 in hall 2."];
function article(paras) {
  let h = "<article>";
  for (let i = 0; i < paras; i++) {
    if (i % 4 === 0) h += `<h2>${i / 4 + 1}. ${pick(["Production", "Utilities", "Quality", "Maintenance", "Safety", "Energy"])}</h2>`;
    h += `<p>${pick(PROSE)} ${pick(PROSE)}</p>`;
    if (i % 6 === 5) h += `<div class="panel">${deviceRows(6)}</div>`;
  }
  return h + "</article>";
}

const PAGES = [
  ["Operations", "#1d3557", "Dashboard", () => cards([["98.2 %", "Availability"], ["14,380", "Units today"], ["3", "Open alarms"], ["412 kW", "Power"]]) +
    `<div class="panel"><h3>Line throughput, last 24 h</h3>${chart(1500, 260, 96, "#0b69a3")}</div><div class="panel">${deviceRows(6)}</div>`],
  ["Operations", "#1d3557", "Devices", () => `<div class="panel">${deviceRows(22)}</div>`],
  ["Operations", "#7a1f2b", "Alarms", () => `<div class="panel"><table><tr><th>Time</th><th>Severity</th><th>Source</th><th>Message</th><th>Ack</th></tr>` +
    Array.from({ length: 20 }, (_, i) => `<tr><td>09:${String(40 - i).padStart(2, "0")}:${String((i * 17) % 60).padStart(2, "0")}</td><td class="${pick(["bad", "warn", "ok"])}">${pick(["High", "Medium", "Low"])}</td><td>${pick(DEVICES)}</td><td>${pick(["Temperature above limit", "Motor current high", "Door open", "Low level in tank", "Communication lost", "Filter clogged"])}</td><td>${pick(["—", "MK", "JS"])}</td></tr>`).join("") + "</table></div>"],
  ["Operations", "#264653", "Trends", () => `<div class="panel">${chart(1500, 300, 200, "#e76f51")}</div><div class="panel">${chart(1500, 300, 200, "#2a9d8f")}</div>`],
  ["Maintenance", "#2d6a4f", "Work orders", () => cards([["27", "Open"], ["6", "Overdue"], ["112", "Done this month"], ["4.1 h", "Mean time to repair"]]) + `<div class="panel">${deviceRows(14)}</div>`],
  ["Maintenance", "#2d6a4f", "Spare parts", () => `<div class="panel"><table><tr><th>Part no.</th><th>Description</th><th>Stock</th><th>Min</th><th>Location</th></tr>` +
    Array.from({ length: 22 }, (_, i) => `<tr><td>SP-${10000 + i * 37}</td><td>${pick(["Bearing 6204-2RS", "V-belt SPA 1250", "Seal kit DN50", "Proximity sensor M12", "Contactor 24 V", "Filter cartridge 10 µm"])}</td><td>${Math.floor(rnd() * 40)}</td><td>${Math.floor(rnd() * 8)}</td><td>Rack ${pick("ABCDE")}-${1 + i % 9}</td></tr>`).join("") + "</table></div>"],
  ["Maintenance", "#40531b", "Calendar", () => `<div class="panel"><table><tr>${["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map((d) => `<th>${d}</th>`).join("")}</tr>` +
    Array.from({ length: 5 }, (_, w) => "<tr>" + Array.from({ length: 7 }, (_, d) => `<td style="height:120px;vertical-align:top">${w * 7 + d + 1 <= 30 ? `<b>${w * 7 + d + 1}</b><br>${rnd() < 0.4 ? pick(["Inspect P-101", "Oil change K-5", "Calibrate F-3", "Clean D-9"]) : ""}` : ""}</td>`).join("") + "</tr>").join("") + "</table></div>"],
  ["Administration", "#3c3c3c", "Users", () => `<div class="panel"><table><tr><th>Name</th><th>Role</th><th>Last login</th><th>Status</th></tr>` +
    Array.from({ length: 20 }, (_, i) => `<tr><td>${pick(["Anna", "Jonas", "Mira", "Felix", "Lea", "Tom", "Sara", "Ben"])} ${pick(["Keller", "Schmidt", "Weber", "Fischer", "Wagner", "Becker"])}</td><td>${pick(["Operator", "Shift lead", "Maintenance", "Admin"])}</td><td>2026-12-0${1 + i % 2} ${String(6 + i % 12).padStart(2, "0")}:1${i % 10}</td><td class="${pick(["ok", "ok", "warn"])}">${pick(["Active", "Active", "Locked"])}</td></tr>`).join("") + "</table></div>"],
  ["Administration", "#3c3c3c", "Settings", () => `<div class="panel"><form>` +
    ["Plant name", "Time zone", "Historian server", "Alarm e-mail", "Shift start", "Retention (days)", "Language", "Units"].map((l) => `<div class="row"><label>${l}</label><input value="${pick(["Werk Süd", "Europe/Berlin", "hist01.plant.local", "alarms@plant.local", "06:00", "365", "English", "Metric"])}"></div>`).join("") +
    `<button>Save</button> <button class="sec">Cancel</button></form></div>`],
  ["Administration", "#4a2c5a", "Audit log", () => `<div class="panel"><table><tr><th>Time</th><th>User</th><th>Action</th></tr>` +
    Array.from({ length: 24 }, (_, i) => `<tr><td>2026-12-02 0${i % 10}:${String((i * 13) % 60).padStart(2, "0")}:0${i % 10}</td><td>${pick(["mkeller", "jschmidt", "admin", "lweber"])}</td><td>${pick(["Changed set point of B-1 to 6.0 bar", "Acknowledged alarm 4711", "Logged in", "Exported trend data", "Edited user role"])}</td></tr>`).join("") + "</table></div>"],
];
const BGS = ["#f4f6f8", "#eef4f0", "#f8f1f1", "#eef2f7", "#f2f7ee", "#f7f4ec", "#eef6f6", "#f1f1f4", "#f6f0f6", "#f3f3ee"];

function page(title, crumbs, body, active) {
  nav(active);
  main.innerHTML = `<h1>${title}</h1><div class="crumbs">${crumbs}</div>${body}`;
}

if (params.has("typing")) {
  nav("Work orders");
  const text = "Pump P-101 makes a grinding noise at high speed. Please check the bearing and the coupling alignment before the next shift; spare bearing 6204-2RS is in rack B-3.";
  const n = num("typing");
  main.innerHTML = `<h1>New work order</h1><div class="crumbs">Maintenance › Work orders › New</div><div class="panel"><form>
    <div class="row"><label>Device</label><select><option>Pump P-101</option></select></div>
    <div class="row"><label>Priority</label><select><option>High</option></select></div>
    <div class="row"><label>Requested by</label><input value="M. Keller"></div>
    <div class="row"><label>Title</label><input id="f" autocomplete="off"></div>
    <div class="row"><label>Description</label><textarea placeholder="What happened, where, since when?"></textarea></div>
    <div class="row"><label></label><div><button>Create</button> <button class="sec">Cancel</button></div></div></form></div>` +
    `<div class="panel"><h3>Recent work orders</h3>${deviceRows(5)}</div>`;
  const f = document.getElementById("f");
  f.value = text.slice(0, n);
  f.focus();
  f.setSelectionRange(n, n);
} else if (params.has("clock")) {
  const s = num("clock");
  clock(s);
  page("Dashboard", "Operations › Dashboard",
    cards([["98.2 %", "Availability"], ["14,380", "Units today"], ["3", "Open alarms"], ["412 kW", "Power"]]) +
    `<div class="panel"><h3>Batch 2026-1202-07: filling</h3><div class="bar"><div style="width:${(20 + s * 0.5).toFixed(1)}%"></div></div>
     <p>Elapsed ${Math.floor((600 + s) / 60)} min ${(600 + s) % 60} s of 50 min</p></div>` +
    `<div class="panel"><h3>Line throughput, last 24 h</h3>${chart(1500, 260, 96, "#0b69a3")}</div>`, "Dashboard");
} else if (params.has("scroll")) {
  page("Shift report", "Operations › Shift report › Night shift 1 Dec 2026", article(60), "Shift report");
  main.scrollTop = num("scroll") * 20;
} else if (params.has("page")) {
  const n = num("page") % PAGES.length;
  const [sec, color, title, body] = PAGES[n];
  seed = 777 + n * 31;
  document.querySelector("header").style.background = color;
  main.style.background = BGS[n % BGS.length];
  page(title, `${sec} › ${title}`, body(), title);
} else if (params.has("term")) {
  document.body.innerHTML = "";
  document.body.style.cssText = "background:#1e1e1e;color:#d4d4d4;font:16px/20px 'DejaVu Sans Mono',monospace;padding:4px 8px;white-space:pre;overflow:hidden";
  const n = num("term");
  const lines = [];
  seed = 4242;
  const crates = ["serde", "tokio", "rustls", "ring", "zstd-sys", "hyper", "clap", "regex", "syn", "quote", "proc-macro2", "libc", "mio", "bytes", "tracing", "h2", "time", "rand", "xxhash-rust", "lz4_flex"];
  for (let i = 0; i < 60 + 2 * n; i++) {
    const c = pick(crates);
    lines.push(rnd() < 0.85 ? `   Compiling ${c} v${1 + Math.floor(rnd() * 3)}.${Math.floor(rnd() * 40)}.${Math.floor(rnd() * 12)}`
      : `warning: unused variable: \`${pick(["frame", "buf", "idx", "tile"])}\` --> src/${pick(["lib", "main", "encode"])}.rs:${Math.floor(rnd() * 900)}:${Math.floor(rnd() * 40)}`);
  }
  const shown = lines.slice(-53);
  shown.push(`    Building [${"=".repeat(Math.min(60, n * 2))}>${" ".repeat(Math.max(0, 60 - n * 2))}] ${120 + 2 * n}/260: ${pick(crates)}`);
  document.body.innerHTML = shown.map((l) => l.replace(/&/g, "&amp;").replace(/</g, "&lt;")
    .replace(/^(\s*)(Compiling|Building)/, '$1<span style="color:#6ad16a;font-weight:bold">$2</span>')
    .replace(/^warning/, '<span style="color:#e5c07b;font-weight:bold">warning</span>')).join("\n");
} else {
  page("Dashboard", "Operations › Dashboard", cards([["98.2 %", "Availability"], ["14,380", "Units today"], ["3", "Open alarms"], ["412 kW", "Power"]]), "Dashboard");
}
