"""The web view: the job list and the job page with its live log (spec §2 "Web UI").

Served offline: no CDN, no framework (the original loaded React and Babel from unpkg).
Both pages are rendered on the server, so they are complete without JavaScript; a little
script then refreshes the list every 3 s and tails a pending job's log over SSE.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import orjson

from pazari.mistry.buildinfo import BuildInfo, format_time, index_time
from pazari.mistry.store import IndexEntry

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222}
header{background:#2c3e50;color:#fff;padding:.6rem 1.2rem}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:1rem 1.2rem}
h1{word-break:break-all;font-size:1.6rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;font-size:.92rem}
th{background:#f4f4f4}
td.id{font-family:monospace}
.state-pending{color:#b7791f}.state-ready{color:#2f855a}.failed{color:#c53030}
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}
dt{font-weight:600}dd{margin:0;font-family:monospace;word-break:break-all}
pre#log{background:#111;color:#ddd;padding:.8rem;overflow:auto;max-height:70vh;
white-space:pre-wrap;font-size:.85rem}
"""

INDEX_JS = """
function cell(text){const td=document.createElement('td');td.textContent=text;return td;}
async function refresh(){
  try{
    const resp=await fetch('/index/?limit=100',{headers:{'Accept':'application/json'}});
    if(!resp.ok) return;
    const jobs=await resp.json();
    const body=document.getElementById('jobs');
    body.replaceChildren();
    for(const j of jobs){
      const tr=document.createElement('tr');
      const id=document.createElement('td');id.className='id';
      const a=document.createElement('a');a.href='/job/'+j.project+'/'+j.id;a.textContent=j.id;
      id.appendChild(a);tr.appendChild(id);
      tr.appendChild(cell(j.project));tr.appendChild(cell(j.startedAt));
      const bi=j.buildInfo||{};
      const failed=j.state==='ready'&&(bi.ExitCode!==0||bi.ErrBuild);
      const st=cell(failed?'ready (failed)':j.state);
      st.className=failed?'failed':'state-'+j.state;tr.appendChild(st);
      body.appendChild(tr);
    }
    document.getElementById('empty').hidden=jobs.length>0;
  }catch(e){}
}
setInterval(refresh,3000);
"""

JOB_JS = """
const root=document.getElementById('job');
function tail(){
  const log=document.getElementById('log');
  let buffer=[];
  const src=new EventSource('/log/'+root.dataset.project+'/'+root.dataset.id+
                            '?offset='+root.dataset.offset);
  src.onmessage=(e)=>{buffer.push(e.data);};
  src.addEventListener('end',()=>{src.close();setTimeout(()=>location.reload(),300);});
  src.onerror=()=>{buffer.push('Web tail failed.');src.close();};
  setInterval(()=>{if(buffer.length){log.textContent+=buffer.join('\\n')+'\\n';buffer=[];}},500);
  setInterval(async()=>{
    const r=await fetch(location.pathname,{headers:{'Accept':'application/json'}});
    if(r.ok&&(await r.json()).State==='ready') location.reload();
  },3000);
}
// Start tailing once the page has loaded: the open stream must not hold up the load event.
if(root.dataset.state==='pending') window.addEventListener('load',()=>setTimeout(tail,0));
"""


def _page(title: str, body: str, script: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{CSS}</style></head><body>"
        '<header><a href="/">mistry</a></header>'
        f"<main>{body}</main><script>{script}</script></body></html>\n"
    )


def render_index(entries: Iterable[IndexEntry], total: int) -> str:
    rows = []
    for e in entries:
        href = f"/job/{e.project}/{e.job_id}"
        failed = e.state == "ready" and (e.info.exit_code != 0 or bool(e.info.err_build))
        state, cls = ("ready (failed)", "failed") if failed else (e.state, f"state-{e.state}")
        rows.append(
            f'<tr><td class="id"><a href="{html.escape(href)}">{e.job_id}</a></td>'
            f"<td>{html.escape(e.project)}</td>"
            f"<td>{html.escape(index_time(e.info.started_at_ns))}</td>"
            f'<td class="{cls}">{state}</td></tr>'
        )
    body = (
        f"<h1>Jobs</h1><p>{total} jobs</p>"
        f'<p id="empty"{" hidden" if rows else ""}>No jobs...</p>'
        "<table><thead><tr><th>ID</th><th>Project</th><th>Started At</th><th>State</th>"
        f'</tr></thead><tbody id="jobs">{"".join(rows)}</tbody></table>'
    )
    return _page("mistry jobs", body, INDEX_JS)


def render_job(project: str, job_id: str, state: str, info: BuildInfo, log: str) -> str:
    failed = info.exit_code != 0 or bool(info.err_build)
    details = [
        ("Project", project),
        ("Group", info.group),
        ("State", state),
        ("Started At", format_time(info.started_at_ns)),
        ("Duration", str(info.duration_ns)),
        ("Path", info.path),
        ("Params", orjson.dumps(info.params).decode()),
        ("Cached", str(info.cached).lower()),
        ("Coalesced", str(info.coalesced).lower()),
        ("Incremental", str(info.incremental).lower()),
        ("ExitCode", str(info.exit_code)),
        ("Transport method", info.transport_method),
        ("Error", info.err_build),
    ]
    items = []
    for k, v in details:
        cls = ' class="failed"' if k == "ExitCode" and failed and state == "ready" else ""
        items.append(f"<dt>{html.escape(k)}</dt><dd{cls}>{html.escape(v)}</dd>")
    dl = "".join(items)
    offset = len(log.encode())
    body = (
        f'<div id="job" data-project="{html.escape(project)}" data-id="{job_id}" '
        f'data-state="{state}" data-offset="{offset}">'
        f"<h1>Job {job_id}</h1><dl>{dl}</dl><h2>Log</h2>"
        f'<pre id="log">{html.escape(log)}</pre></div>'
    )
    return _page(f"mistry job {job_id[:7]}", body, JOB_JS)
