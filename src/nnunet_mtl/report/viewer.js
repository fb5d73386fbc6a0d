// The report's case viewer: NiiVue (embedded gzip+base64 in #niivue-bundle) showing one embedded case at a
// time: CT (#viewer-config's uint8 range mapped back to HU), truth and prediction masks as label overlays.
// State for people and tests: #viewer's data-state (loading, ready, error), data-case, data-slice.
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) return;
  var config = JSON.parse(document.getElementById("viewer-config").textContent);
  var $ = function (id) { return document.getElementById("viewer-" + id); };
  var low = config.ct_range_hu[0], step = (config.ct_range_hu[1] - low) / 255;
  var nv = null, current = null, token = 0, nz = 1;
  var LABEL_INTENT = 1002;

  function status(text, state) {
    $("status").textContent = text;
    if (state) root.dataset.state = state;
  }

  async function gunzipBase64(text) {
    var binary = atob(text.trim()), bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  }

  async function loadNiivue() {
    var code = await gunzipBase64(document.getElementById("niivue-bundle").textContent);
    var script = document.createElement("script");
    script.textContent = code;  // the UMD bundle defines window.niivue
    document.head.appendChild(script);
    if (!window.niivue) throw new Error("the NiiVue bundle did not load");
    return window.niivue;
  }

  function labelMap(colours, alpha) {
    var rgb = colours.map(function (hex) {
      return [1, 3, 5].map(function (k) { return parseInt(hex.slice(k, k + 2), 16); });
    });
    return {
      R: [0, rgb[0][0], rgb[1][0]], G: [0, rgb[0][1], rgb[1][1]], B: [0, rgb[0][2], rgb[1][2]],
      A: [0, alpha, alpha], I: [0, 1, 2], labels: ["", "pancreas", "lesion"]
    };
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
  }

  function cell(text, tag) {
    var element = document.createElement(tag || "td");
    element.textContent = text;
    return element;
  }

  function showFacts(data) {
    var body = $("facts");
    body.replaceChildren();
    var size = data.shape.join("\u00d7") + " voxels (z\u00d7y\u00d7x)" +
      (data.stride > 1 ? ", every " + data.stride + "th row and column" : "");
    [["case", data.name],
     ["rank", data.rank + " of " + config.num_cases + " by mean Dice (1: best)"],
     ["Dice whole pancreas", fmt(data.dice_whole, 4)],
     ["Dice lesion", fmt(data.dice_lesion, 4)],
     ["subtype true / predicted", (data.subtype_true ?? "n/a") + " / " + (data.subtype_pred ?? "n/a")],
     ["embedded", size]].forEach(function (row) {
      var tr = document.createElement("tr");
      tr.append(cell(row[0], "th"), cell(row[1]));
      body.appendChild(tr);
    });
    var box = $("probabilities");
    box.replaceChildren();
    (data.probabilities || []).forEach(function (p, k) {
      var line = document.createElement("div"), bar = document.createElement("span");
      line.className = "viewer-bar" + (k === data.subtype_pred ? " predicted" : "");
      bar.style.width = (100 * p).toFixed(1) + "%";
      line.append(cell("p(subtype " + k + ") " + fmt(p, 3) + (k === data.subtype_true ? " (true)" : ""), "span"), bar);
      box.appendChild(line);
    });
  }

  function applyWindow() {
    if (!nv || !nv.volumes.length) return;
    var level = parseFloat($("level").value), width = Math.max(1, parseFloat($("width").value));
    if (isNaN(level) || isNaN(width)) return;
    nv.volumes[0].cal_min = (level - width / 2 - low) / step;
    nv.volumes[0].cal_max = (level + width / 2 - low) / step;
    nv.updateGLVolume();
  }

  function styleMask(volume) {
    var kind = volume.name.endsWith("truth.nii.gz") ? "truth" : "prediction";
    // NiiVue draws the border of the volumes whose NIfTI intent is "label" (1002) opaque and their
    // inside in the colour map's alpha: an outline is the label intent and a transparent inside
    var outline = $(kind + "-outline").checked;
    volume.hdr.intent_code = outline ? LABEL_INTENT : 0;
    volume.setColormapLabel(labelMap(config[kind + "_colours"], outline ? 0 : 255));
    volume.opacity = $(kind).checked ? $("opacity").value / 100 : 0;
  }

  function applyOverlays() {
    if (!nv || nv.volumes.length < 2) return;
    nv.volumes.slice(1).forEach(styleMask);
    nv.setAtlasOutline(1);  // updates the GL volumes
  }

  function applyLayout() {
    var value = $("layout").value;
    if (value === "planes") {
      nv.setSliceType(nv.sliceTypeMultiplanar);
      nv.setCustomLayout([
        { sliceType: 0, position: [0, 0, 0.62, 1] },
        { sliceType: 1, position: [0.62, 0, 0.38, 0.5] },
        { sliceType: 2, position: [0.62, 0.5, 0.38, 0.5] }
      ]);
    } else {
      nv.clearCustomLayout();
      nv.setSliceType(parseInt(value, 10));
    }
    nv.drawScene();
  }

  function sliceOf(frac) {
    return Math.min(nz - 1, Math.max(0, Math.round(frac[2] * nz - 0.5)));
  }

  function goToSlice(slice) {
    if (!nv || !nv.volumes.length) return;
    slice = Math.min(nz - 1, Math.max(0, slice));
    nv.scene.crosshairPos[2] = (slice + 0.5) / nz;
    nv.drawScene();
    nv.createOnLocationChange(0);
  }

  function onLocation(data) {
    var slice = sliceOf(data.frac);
    root.dataset.slice = String(slice);
    $("slice").value = String(slice);
    $("slice-label").textContent = " " + (slice + 1) + " / " + nz;
    var values = data.values || [], parts = [];
    if (values.length) parts.push("CT " + Math.round(low + values[0].value * step) + " HU (stored range " +
      config.ct_range_hu.join(" to ") + ")");
    values.slice(1).forEach(function (v) {
      var label = ["background", "pancreas", "lesion"][Math.round(v.value)] || "?";
      parts.push((v.name.endsWith("truth.nii.gz") ? "truth " : "prediction ") + label);
    });
    var mm = Array.from(data.mm || []).slice(0, 3).map(function (x) { return x.toFixed(1); });
    $("location").textContent = mm.join(", ") + " mm (RAS): " + parts.join("; ");
  }

  async function showCase(name) {
    var script = document.querySelector('script.viewer-case[data-case="' + CSS.escape(name) + '"]');
    if (!script || !nv) return;
    var mine = ++token;
    status("loading " + name + "\u2026", "loading");
    var data = JSON.parse(script.textContent);
    var volumes = [await niivue.NVImage.loadFromBase64({ base64: data.ct, name: name + "_ct.nii.gz" })];
    for (var kind of ["truth", "prediction"]) {
      if (!data[kind]) continue;
      var mask = await niivue.NVImage.loadFromBase64({ base64: data[kind], name: name + "_" + kind + ".nii.gz" });
      styleMask(mask);
      volumes.push(mask);
    }
    if (mine !== token) return;  // a later choice won
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    volumes.forEach(function (volume) { nv.addVolume(volume); });
    current = name;
    $("truth").disabled = !data.truth;
    nz = nv.volumes[0].dimsRAS[3];
    $("slice").max = String(nz - 1);
    applyWindow();
    applyOverlays();
    nv.scene.crosshairPos = nv.mm2frac(data.focus_mm);
    nv.drawScene();
    nv.createOnLocationChange(0);
    showFacts(data);
    $("select").value = name;
    document.querySelectorAll("#cases tr[data-case]").forEach(function (row) {
      row.classList.toggle("viewing", row.dataset.case === name);
    });
    root.dataset.case = name;
    status("showing " + name + " (" + config.order.length + " of " + config.num_cases +
      " cases embedded; viewer: " + config.niivue + ")", "ready");
  }

  function stepCase(delta) {
    var at = config.order.indexOf(current);
    var next = config.order[(at + delta + config.order.length) % config.order.length];
    showCase(next).catch(fail);
  }

  function fail(error) {
    console.error(error);
    status("viewer failed: " + error, "error");
  }

  function wire() {
    config.order.forEach(function (name) {
      var option = document.createElement("option");
      option.value = option.textContent = name;
      $("select").appendChild(option);
    });
    $("select").addEventListener("change", function () { showCase(this.value).catch(fail); });
    $("prev").addEventListener("click", function () { stepCase(-1); });
    $("next").addEventListener("click", function () { stepCase(1); });
    $("slice").addEventListener("input", function () { goToSlice(parseInt(this.value, 10)); });
    ["truth", "prediction", "opacity", "truth-outline", "prediction-outline"].forEach(function (id) { $(id).addEventListener("input", applyOverlays); });
    ["level", "width"].forEach(function (id) { $(id).addEventListener("input", applyWindow); });
    $("layout").addEventListener("change", applyLayout);
    root.addEventListener("keydown", function (e) {
      if (/^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(e.target.tagName)) return;
      var slice = parseInt(root.dataset.slice || "0", 10);
      var moves = { ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10 };
      if (e.key in moves) goToSlice(slice + moves[e.key]);
      else if (e.key === "Home") goToSlice(0);
      else if (e.key === "End") goToSlice(nz - 1);
      else if (e.key === "n") stepCase(1);
      else if (e.key === "p") stepCase(-1);
      else return;
      e.preventDefault();
    });
    var embedded = new Set(config.order);
    document.querySelectorAll("#cases tr[data-case]").forEach(function (row) {
      if (!embedded.has(row.dataset.case)) {
        row.classList.add("not-embedded");
        row.title = "not embedded in the viewer (size budget)";
        return;
      }
      row.classList.add("viewable");
      row.title = "open in the viewer";
      row.addEventListener("click", function () {
        showCase(row.dataset.case).then(function () {
          root.scrollIntoView({ block: "nearest" });
          root.focus({ preventScroll: true });
        }).catch(fail);
      });
    });
  }

  async function start() {
    var lib = await loadNiivue();
    nv = new lib.Niivue({
      backColor: [0, 0, 0, 1], isColorbar: false, show3Dcrosshair: false, isRadiologicalConvention: true,
      crosshairColor: [1, 1, 1, 0.5], crosshairWidth: 0.4, crosshairWidthUnit: "percent", crosshairGap: 6, isOrientCube: false,
      dragAndDropEnabled: false
    });
    nv.onLocationChange = onLocation;
    await nv.attachTo("viewer-canvas");
    wire();
    applyLayout();
    await showCase(config.first);
    root.dataset.readyMs = String(Math.round(performance.now()));
  }

  start().catch(fail);
})();
