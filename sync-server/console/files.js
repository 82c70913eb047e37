// Files guards attach to incidents and notes, as the console shows them: a download link per
// file with its type and size, and the images drawn (a file the phone has not uploaded yet says
// so rather than showing a broken picture).

import { sitePath } from "./api.js";
import { h, short, size } from "./util.js";

/** "1 file", "3 files". */
export function files(n) {
  return n === 1 ? "1 file" : `${n} files`;
}

/** A note's text with how many files it carries, as `patrol control pull` writes it:
 * "fence cut [2 files]", or "[1 file]" for a note that is only its files. */
export function noteWithFiles(text, n) {
  if (!n) return text || "";
  return text ? `${text} [${files(n)}]` : `[${files(n)}]`;
}

function label(a) {
  return a.name || short(a.sha256);
}

/** The list of `attachments` ({sha256, media_type, size, name}), each a download link; when
 * `uploaded` (a Set of hashes) is given, those not in it are marked not uploaded yet. */
export function fileList(site, attachments, uploaded) {
  if (!attachments.length) return h("p.empty", {}, "None.");
  return h("ul.attachments", {}, attachments.map((a) => {
    const waiting = uploaded && !uploaded.has(a.sha256);
    return h("li", { dataset: { sha256: a.sha256 } },
      waiting ? label(a) : h("a", { href: sitePath(site, `/attachments/${a.sha256}`) }, label(a)),
      ` ${a.media_type}, ${size(a.size)}`,
      waiting ? h("span.meta", {}, " · not uploaded by the phone yet") : null);
  }));
}

/** The images among `attachments`, drawn. */
export function images(site, attachments) {
  return h("div.images", {}, attachments.filter((a) => a.media_type.startsWith("image/")).map((a) => h("img", {
    src: sitePath(site, `/attachments/${a.sha256}`),
    alt: label(a),
    onerror: (e) => e.target.replaceWith(h("p.empty", {}, `${label(a)}: not uploaded yet`)),
  })));
}
