// {{name}}: a retention policy in JavaScript. As scaffolded it deletes
// partitions whose period ended more than `max_age` ago and keeps the others,
// saying why.
//
//     [config]
//     max_age = "90d"   # 30s, 15m, 12h, 90d, 2w
//
// Edit the places marked EDIT:. The contract is wit/policy.wit; componentize-js
// (npm @bytecodealliance/componentize-js) builds the component:
//
//     componentize-js app.js -w wit -n retention -d stdio random clocks http fetch-event -o {{name}}.wasm
//
// `-d stdio random clocks http fetch-event` is required: without it the
// component imports WASI stdio, random bytes, clocks and HTTP, which the host
// does not link (a policy has no clock, randomness or network, so the same
// facts always give the same decisions) and refuses.
//
// WIT names become camelCase (`validate-config` is `validateConfig`), `s64`
// values are BigInt (`nowNs`, `periodEndNs` is a BigInt64Array) and enums are
// strings ("keep", "delete"). Texts (`partitions.key`, `periodLabel`) are one
// buffer and end offsets, and the offsets are UTF-8 BYTE offsets: slice the
// encoded bytes, not the JS string (see `text` below).

const UNITS_NS = { s: 10n ** 9n, m: 60n * 10n ** 9n, h: 3600n * 10n ** 9n, d: 86400n * 10n ** 9n, w: 7n * 86400n * 10n ** 9n };

/** `90d` in nanoseconds (a BigInt), or throw an Error. */
function parseDurationNs(text) {
  const match = typeof text === "string" ? /^([0-9]+)([smhdw])$/.exec(text) : null;
  if (!match) throw new Error(`\`${text}\` is not a duration like 30s, 15m, 12h, 90d or 2w`);
  const count = BigInt(match[1]);
  if (count === 0n) throw new Error(`\`${text}\` must be longer than zero`);
  return count * UNITS_NS[match[2]];
}

/** A duration in its largest whole unit, as reasons quote it: `95d`. */
function age(ns) {
  const seconds = ns / 10n ** 9n;
  for (const [unit, size] of [["d", 86400n], ["h", 3600n], ["m", 60n]]) {
    if (seconds >= size) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** String `i` of a `texts` record: `ends` are UTF-8 byte offsets. */
export function text(texts, i) {
  const bytes = new TextEncoder().encode(texts.text);
  const start = i === 0 ? 0 : texts.ends[i - 1];
  return new TextDecoder().decode(bytes.subarray(start, texts.ends[i]));
}

/** EDIT: the config. Returns [config, problems]: every problem at once. */
function parseConfig(raw) {
  const table = JSON.parse(raw);
  const problems = [];
  const known = ["max_age"];
  const maxAge = table.max_age ?? "90d";
  let maxAgeNs = null;
  try {
    maxAgeNs = parseDurationNs(maxAge);
  } catch (error) {
    problems.push(`max_age: ${error.message}`);
  }
  for (const key of Object.keys(table).sort()) {
    if (!known.includes(key)) problems.push(`${key}: unknown key (known keys: ${known.join(", ")})`);
  }
  return [{ maxAge, maxAgeNs }, problems];
}

/** EDIT: the policy: one decision, with a reason, per partition. */
function decide(nowNs, config, partitions) {
  const reasons = [];
  const index = new Map();
  const reason = (sentence) => {
    if (!index.has(sentence)) {
      index.set(sentence, reasons.length);
      reasons.push(sentence);
    }
    return index.get(sentence);
  };
  const decisions = [];
  partitions.periodEndNs.forEach((periodEndNs, i) => {
    const ageNs = nowNs - periodEndNs;
    let action, why;
    if (ageNs <= 0n) {
      [action, why] = ["keep", "period has not ended yet"];
    } else if (ageNs > config.maxAgeNs) {
      [action, why] = ["delete", `period ended ${age(ageNs)} ago, more than max_age ${config.maxAge}`];
    } else {
      [action, why] = ["keep", `period ended ${age(ageNs)} ago, within max_age ${config.maxAge}`];
    }
    decisions.push({ partition: i, action, reason: reason(why) });
  });
  return { decisions, reasons };
}

// The `retention` world's exports: glue to the functions above.

/** Throws (the `err` of the result) with every problem of the config. */
export function validateConfig(config) {
  const [, problems] = parseConfig(config);
  if (problems.length > 0) throw { payload: problems };
}

/** The decisions for one dataset's partitions. */
export function evaluate(nowNs, config, dataset, partitions) {
  const [parsed, problems] = parseConfig(config);
  if (problems.length > 0) throw new Error("invalid config: " + problems.join("; "));
  return decide(nowNs, parsed, partitions);
}
