#!/usr/bin/env bash
# The dependency checker: enforces rules.txt over the source tree, the CMake targets' link
# libraries and the compiled objects' symbols. Owns nothing but the checking; the rules live in
# rules.txt and the link lists and object paths in the manifest CMake writes (tests/deps).
#
#   check_deps.sh --root DIR --rules FILE --manifest FILE [--nm NM]
#
# Three passes, each printing one line per breach:
#   includes  every `#include` of every .c/.h in a folder of ours, resolved to the folder the
#             header lives in (the includer's own folder first, then by name), followed through
#             other folders' headers       -> `file:line: includes X: rule`
#   links     each target's link libraries, followed transitively through our targets
#                                          -> `target: links X (via A -> B): rule`
#   files     `nm` over the objects of the files the file rules name, and their source
#                                          -> `file:line: references sym: rule`
# A rule naming a file, object or target that does not exist is a breach too, never a skip.
# Exit status: 0 clean, 1 breaches, 2 usage. Needs bash, awk (POSIX, mawk is enough), grep, nm.
set -u
set -f   # rule arguments are globs over symbols, never over files

usage() {
    echo "usage: $0 --root DIR --rules FILE --manifest FILE [--nm NM]" >&2
    exit 2
}

root="" rules="" manifest="" nm="nm"
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:-}"; shift 2 || usage ;;
        --rules) rules="${2:-}"; shift 2 || usage ;;
        --manifest) manifest="${2:-}"; shift 2 || usage ;;
        --nm) nm="${2:-}"; shift 2 || usage ;;
        *) usage ;;
    esac
done
[ -n "$root" ] && [ -n "$rules" ] && [ -n "$manifest" ] || usage
[ -d "$root" ] || { echo "check_deps: no source tree at $root" >&2; exit 2; }
[ -r "$rules" ] || { echo "check_deps: cannot read rules $rules" >&2; exit 2; }
[ -r "$manifest" ] || { echo "check_deps: cannot read manifest $manifest (written by CMake at generate time)" >&2; exit 2; }
command -v "$nm" >/dev/null 2>&1 || { echo "check_deps: nm not found ($nm)" >&2; exit 2; }

out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
breach() { printf '%s\n' "$*" >>"$out"; }

# ---- rules ---------------------------------------------------------------------------------
folders=""      # space-separated
never=""        # "from:to" pairs
why_never=""    # "from:to=why" lines (newline-separated)
ext_header=""   # "name=@x" pairs
ext_link=""     # "name=@x" pairs
targets=""
file_rules=()   # "kind<TAB>file<TAB>args<TAB>why"
lineno=0
bad() { echo "check_deps: $rules:$lineno: $1" >&2; exit 2; }
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line="${line%%#*}"
    why=""
    case "$line" in *" -- "*) why="${line#* -- }"; line="${line%% -- *}" ;; esac
    read -r -a w <<<"$line"
    [ ${#w[@]} -eq 0 ] && continue
    case "${w[0]}" in
        folders) folders="$folders ${w[*]:1}" ;;
        never)
            [ ${#w[@]} -ge 3 ] || bad "never FROM TO..."
            for to in "${w[@]:2}"; do
                never="$never ${w[1]}:$to"
                why_never="$why_never${w[1]}:$to=$why"$'\n'
            done ;;
        external)
            [ ${#w[@]} -ge 4 ] && [ "${w[1]#@}" != "${w[1]}" ] || bad "external @NAME header|link NAME..."
            for n in "${w[@]:3}"; do
                case "${w[2]}" in
                    header) ext_header="$ext_header $n=${w[1]}" ;;
                    link) ext_link="$ext_link $n=${w[1]}" ;;
                    *) bad "external @NAME header|link NAME..." ;;
                esac
            done ;;
        target) targets="$targets ${w[*]:1}" ;;
        no-calls-into|no-symbol|no-include|no-token)
            [ ${#w[@]} -ge 3 ] || bad "${w[0]} FILE ARG..."
            file_rules+=("${w[0]}"$'\t'"${w[1]}"$'\t'"${w[*]:2}"$'\t'"$why") ;;
        *) bad "unknown rule '${w[0]}'" ;;
    esac
done <"$rules"
[ -n "$folders" ] || { echo "check_deps: $rules names no folders" >&2; exit 2; }

# ---- includes ------------------------------------------------------------------------------
# Every .c/.h of our folders, as paths relative to the root.
files=() present=()
for f in $folders; do
    if [ -d "$root/$f" ]; then present+=("$f"); else breach "$f/: folder named in the rules does not exist"; fi
done
if [ ${#present[@]} -gt 0 ]; then
    while IFS= read -r p; do files+=("$p"); done < <(cd "$root" && find "${present[@]}" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
fi

if [ ${#files[@]} -gt 0 ]; then
(cd "$root" && awk -v folders="$folders" -v never="$never" -v why_never="$why_never" \
                    -v ext="$ext_header" '
function folder_of(p) { return substr(p, 1, index(p, "/") - 1) }
function base_of(p) { sub(/.*\//, "", p); return p }
function dir_of(p) { if (index(p, "/") == 0) return "."; sub(/\/[^\/]*$/, "", p); return p }
# a/b/../c/./d -> a/c/d
function normalize(p,   n, parts, i, out, k, st) {
    n = split(p, parts, "/"); k = 0
    for (i = 1; i <= n; i++) {
        if (parts[i] == "" || parts[i] == ".") continue
        if (parts[i] == ".." && k > 0 && st[k] != "..") { k--; continue }
        st[++k] = parts[i]
    }
    out = ""
    for (i = 1; i <= k; i++) out = out (i > 1 ? "/" : "") st[i]
    return out
}
# The node an include names: a path of ours, an @external, "?a b" (ambiguous) or "" (other).
function resolve(f, name, quoted,   cand, b, n, c, i, hit, nhit) {
    if (quoted) {
        cand = normalize(dir_of(f) "/" name)
        if (cand in exists) return cand
    }
    if (index(name, "/") && (normalize(name) in exists)) return normalize(name)
    b = base_of(name); nhit = 0; hit = ""
    if (b in hpaths) {
        n = split(hpaths[b], c, " ")
        for (i = 1; i <= n; i++)
            if (c[i] == name || substr(c[i], length(c[i]) - length(name)) == "/" name) {
                nhit++; hit = hit (nhit > 1 ? " " : "") c[i]
            }
        if (nhit == 1) return hit
        if (nhit > 1) return "?" hit
    }
    if (name in extmap) return extmap[name]
    if (b in extmap) return extmap[b]
    return ""
}
function node_folder(t) { return substr(t, 1, 1) == "@" ? t : folder_of(t) }
function forbidden(from, to) {
    if ((from SUBSEP to) in forbid) return 1
    if ((from SUBSEP "*") in forbid && (to in isfolder) && to != from) return 1
    return 0
}
function rule_text(from, to,   key, w) {
    key = ((from SUBSEP to) in forbid) ? from ":" to : from ":*"
    w = whymap[key]
    return (substr(to, 1, 1) == "@" ? from "/ never depends on " to : from "/ never depends on " to "/") \
           (w != "" ? " (" w ")" : "")
}
# Follow header t (reached from file f include k through chain) into its own includes.
function walk(f, k, F, t, chain,   j, u, uf) {
    if ((f SUBSEP k SUBSEP t) in seen) return
    seen[f, k, t] = 1
    for (j = 1; j <= ninc[t]; j++) {
        u = res[t, j]
        if (u == "" || substr(u, 1, 1) == "?") continue
        uf = node_folder(u)
        if (forbidden(F, uf) && !((f SUBSEP k SUBSEP uf) in told)) {
            told[f, k, uf] = 1
            printf "%s:%d: includes %s -> %s -> %s: %s\n", f, incline[f, k], incname[f, k], chain, u, rule_text(F, uf)
        }
        if (substr(u, 1, 1) != "@" && uf != F) walk(f, k, F, u, chain " -> " u)
    }
}
BEGIN {
    n = split(folders, a, " "); for (i = 1; i <= n; i++) isfolder[a[i]] = 1
    n = split(never, a, " ")
    for (i = 1; i <= n; i++) { split(a[i], p, ":"); forbid[p[1], p[2]] = 1 }
    n = split(why_never, a, "\n")
    for (i = 1; i <= n; i++) { e = index(a[i], "="); if (e) whymap[substr(a[i], 1, e - 1)] = substr(a[i], e + 1) }
    n = split(ext, a, " ")
    for (i = 1; i <= n; i++) { e = index(a[i], "="); extmap[substr(a[i], 1, e - 1)] = substr(a[i], e + 1) }
    for (i = 1; i < ARGC; i++) {
        exists[ARGV[i]] = 1
        if (ARGV[i] ~ /\.h$/) { b = base_of(ARGV[i]); hpaths[b] = (b in hpaths) ? hpaths[b] " " ARGV[i] : ARGV[i] }
    }
}
/^[ \t]*#[ \t]*include[ \t]*["<]/ {
    s = $0; sub(/^[ \t]*#[ \t]*include[ \t]*/, "", s)
    q = substr(s, 1, 1) == "\""; s = substr(s, 2)
    e = index(s, q ? "\"" : ">"); if (e == 0) next
    k = ++ninc[FILENAME]
    incname[FILENAME, k] = substr(s, 1, e - 1); incquoted[FILENAME, k] = q; incline[FILENAME, k] = FNR
}
END {
    for (i = 1; i < ARGC; i++) {
        f = ARGV[i]
        for (k = 1; k <= ninc[f]; k++) res[f, k] = resolve(f, incname[f, k], incquoted[f, k])
    }
    for (i = 1; i < ARGC; i++) {
        f = ARGV[i]; F = folder_of(f)
        for (k = 1; k <= ninc[f]; k++) {
            t = res[f, k]
            if (t == "") continue
            if (substr(t, 1, 1) == "?") {
                printf "%s:%d: includes %s, which names several headers of ours (%s): cannot tell its folder\n", f, incline[f, k], incname[f, k], substr(t, 2)
                continue
            }
            tf = node_folder(t)
            if (forbidden(F, tf)) {
                told[f, k, tf] = 1
                printf "%s:%d: includes %s%s: %s\n", f, incline[f, k], incname[f, k], (t == incname[f, k] || substr(t, 1, 1) == "@" ? "" : " (" t ")"), rule_text(F, tf)
            }
            if (substr(t, 1, 1) != "@" && tf != F) walk(f, k, F, t, t)
        }
    }
}' "${files[@]}") >>"$out"
fi
nincl=${#files[@]}

# ---- links ---------------------------------------------------------------------------------
awk -v folders="$folders" -v never="$never" -v why_never="$why_never" -v ext="$ext_link" \
    -v required="$targets" '
function forbidden(from, to) {
    if ((from SUBSEP to) in forbid) return 1
    if ((from SUBSEP "*") in forbid && (to in isfolder) && to != from) return 1
    return 0
}
function rule_text(from, to,   key, w) {
    key = ((from SUBSEP to) in forbid) ? from ":" to : from ":*"
    w = whymap[key]
    return (substr(to, 1, 1) == "@" ? from "/ never depends on " to : from "/ never depends on " to "/") \
           (w != "" ? " (" w ")" : "")
}
# An external link item reduced to its bare name: -lfoo, /x/libfoo.so.1, libfoo.a -> foo.
function bare(item,   b) {
    b = item; sub(/^-l/, "", b); sub(/.*\//, "", b); sub(/^lib/, "", b); sub(/\.(so|a|dylib)(\..*)?$/, "", b)
    return b
}
function node_of(item) {
    if (item in tfolder) return tfolder[item]
    if (item in extmap) return extmap[item]
    if (bare(item) in extmap) return extmap[bare(item)]
    return ""
}
function walk(T, F, t, via,   j, item, nf) {
    if ((T SUBSEP t) in seen) return
    seen[T, t] = 1
    for (j = 1; j <= nlink[t]; j++) {
        item = link[t, j]; nf = node_of(item)
        if (nf == "") continue
        if (forbidden(F, nf) && !((T SUBSEP item) in told)) {
            told[T, item] = 1
            printf "%s: links %s%s: %s\n", T, item, (via == "" ? "" : " (via " via ")"), rule_text(F, nf)
        }
        if (item in tfolder) walk(T, F, item, via == "" ? item : via " -> " item)
    }
}
BEGIN {
    n = split(folders, a, " "); for (i = 1; i <= n; i++) isfolder[a[i]] = 1
    n = split(never, a, " ")
    for (i = 1; i <= n; i++) { split(a[i], p, ":"); forbid[p[1], p[2]] = 1 }
    n = split(why_never, a, "\n")
    for (i = 1; i <= n; i++) { e = index(a[i], "="); if (e) whymap[substr(a[i], 1, e - 1)] = substr(a[i], e + 1) }
    n = split(ext, a, " ")
    for (i = 1; i <= n; i++) { e = index(a[i], "="); extmap[substr(a[i], 1, e - 1)] = substr(a[i], e + 1) }
}
$1 == "target" && NF >= 3 { tfolder[$2] = $3; order[++ntargets] = $2 }
$1 == "link" && NF >= 3 { link[$2, ++nlink[$2]] = $3 }
$1 == "missing" { missing[$2] = 1 }
END {
    n = split(required, a, " ")
    for (i = 1; i <= n; i++)
        if (!(a[i] in tfolder))
            printf "%s: target does not exist%s: its link libraries cannot be checked\n", a[i], (a[i] in missing ? "" : " (not in the manifest)")
    for (i = 1; i <= ntargets; i++) walk(order[i], tfolder[order[i]], order[i], "")
}' "$manifest" >>"$out"
ntargets=$(grep -c '^target[[:space:]]' "$manifest")

# ---- files ---------------------------------------------------------------------------------
objects=()
while IFS= read -r o; do [ -n "$o" ] && objects+=("$o"); done < <(awk '$1 == "object" { sub(/^object[ \t]+/, ""); print }' "$manifest")

# The objects compiled from source SRC (dir/file.c), space-separated in $found: CMake names them
# .../dir/CMakeFiles/<target>.dir/file.c.o.
objects_of() {
    local src="$1" dir file re o
    dir="${src%/*}"; file="${src##*/}"
    re="/${dir//./\\.}/CMakeFiles/[^/]+\\.dir/${file//./\\.}\\.o(bj)?$"
    found=""
    for o in "${objects[@]+"${objects[@]}"}"; do [[ "$o" =~ $re ]] && found="$found $o"; done
}

# Checks that SRC exists and has built objects, leaving them in $got; else records the breach.
need_objects() {
    local src="$1" why="$2" o
    got=""
    if [ ! -f "$root/$src" ]; then breach "$src: no such source file: $why"; return 1; fi
    if [ -z "${objs_of[$src]}" ]; then breach "$src: no object found (not a source of a checked target): $why"; return 1; fi
    for o in ${objs_of[$src]}; do
        if [ ! -f "$o" ]; then breach "$src: object $o not built: $why"; return 1; fi
    done
    got="${objs_of[$src]}"
}

# The source with comments and string/char literals blanked, line structure kept.
strip_c() {
    awk '
    BEGIN { st = 0 }   # 0 code, 1 block comment, 2 string, 3 char
    {
        s = $0; o = ""; n = length(s)
        for (i = 1; i <= n; i++) {
            c = substr(s, i, 1); d = substr(s, i, 2)
            if (st == 1) { if (d == "*/") { st = 0; i++; o = o "  " } else o = o " "; continue }
            if (st == 2 || st == 3) {
                if (c == "\\") { o = o "  "; i++; continue }
                if ((st == 2 && c == "\"") || (st == 3 && c == "\047")) { st = 0; o = o c; continue }
                o = o " "; continue
            }
            if (d == "//") break
            if (d == "/*") { st = 1; i++; o = o "  "; continue }
            if (c == "\"") st = 2
            else if (c == "\047") st = 3
            o = o c
        }
        if (st >= 2) st = 0   # an unterminated literal ends with its line
        print o
    }' "$1"
}

# "file:line:" of the first mention of word W in SRC's code, or "file:" when none is seen.
where() {
    local src="$1" word="$2" ln
    ln=$(strip_c "$root/$src" | grep -n -w -m1 -F -- "$word" | cut -d: -f1)
    if [ -n "$ln" ]; then printf '%s:%s:' "$src" "$ln"; else printf '%s:' "$src"; fi
}

# One nm run per kind over every object the file rules need: und_of[obj] = the symbols obj
# references but does not define, def_of[obj] = the global symbols it defines.
declare -A objs_of=() und_of=() def_of=()
load_symbols() {
    local flags="$1" t obj syms
    shift
    [ $# -gt 0 ] || return 0
    # shellcheck disable=SC2086
    t=$("$nm" $flags "$@") || { breach "check_deps: $nm $flags failed on $*"; return 1; }
    while IFS=$'\t' read -r obj syms; do
        if [ "$flags" = "-u" ]; then und_of[$obj]="$syms"; else def_of[$obj]="$syms"; fi
    done < <(awk -v only="$([ $# -eq 1 ] && printf '%s' "$1")" '
        function flush() { if (cur != "") print cur "\t" syms; syms = "" }
        BEGIN { cur = only }
        /^$/ { next }
        /:$/ && NF == 1 { flush(); cur = substr($0, 1, length($0) - 1); next }
        { s = $NF; sub(/@.*/, "", s); if ($(NF - 1) ~ /^[A-Za-z]$/ && s != "") syms = syms " " s }
        END { flush() }' <<<"$t")
}

nfile=0
wanted=()
for r in "${file_rules[@]+"${file_rules[@]}"}"; do
    IFS=$'\t' read -r kind src args _ <<<"$r"
    case "$kind" in
        no-calls-into) list="$src $args" ;;
        no-symbol) list="$src" ;;
        *) continue ;;
    esac
    for f in $list; do
        [ -n "${objs_of[$f]+x}" ] && continue
        objects_of "$f"; objs_of[$f]="$found"
        for o in ${objs_of[$f]}; do [ -f "$o" ] && wanted+=("$o"); done
    done
done
if [ ${#wanted[@]} -gt 0 ]; then
    load_symbols -u "${wanted[@]}"
    load_symbols "-g --defined-only" "${wanted[@]}"
fi

for r in "${file_rules[@]+"${file_rules[@]}"}"; do
    IFS=$'\t' read -r kind src args why <<<"$r"
    nfile=$((nfile + 1))
    why="${why:-rule $kind}"
    case "$kind" in
        no-calls-into)
            need_objects "$src" "$why"; mine_ok=$?; mine="$got"
            declare -A owner=()
            for other in $args; do
                need_objects "$other" "$why" || continue
                for o in $got; do for s in ${def_of[$o]-}; do owner[$s]="$other"; done; done
            done
            if [ $mine_ok -eq 0 ]; then
                for o in $mine; do for s in ${und_of[$o]-}; do
                    [ -n "${owner[$s]+x}" ] && breach "$(where "$src" "$s") references $s (defined in ${owner[$s]}): $why"
                done; done
            fi
            unset owner ;;
        no-symbol)
            need_objects "$src" "$why" || continue
            declare -A told=()
            for o in $got; do for s in ${und_of[$o]-}; do
                [ -n "${told[$s]+x}" ] && continue
                for g in $args; do
                    # shellcheck disable=SC2053
                    if [[ "$s" == $g ]]; then breach "$(where "$src" "$s") references $s: $why"; told[$s]=1; break; fi
                done
            done; done
            unset told ;;
        no-include)
            if [ ! -f "$root/$src" ]; then breach "$src: no such source file: $why"; continue; fi
            for h in $args; do
                re="^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]([^\">]*/)?${h//./\\.}[\">]"
                while IFS=: read -r ln _; do
                    [ -n "$ln" ] && breach "$src:$ln: includes $h: $why"
                done < <(grep -n -E -- "$re" "$root/$src")
            done ;;
        no-token)
            if [ ! -f "$root/$src" ]; then breach "$src: no such source file: $why"; continue; fi
            for t in $args; do
                while IFS=: read -r ln _; do
                    [ -n "$ln" ] && breach "$src:$ln: names $t: $why"
                done < <(strip_c "$root/$src" | grep -n -w -F -- "$t")
            done ;;
    esac
done

if [ -s "$out" ]; then
    cat "$out"
    echo "check_deps: $(wc -l <"$out") breach(es) of $rules"
    exit 1
fi
echo "check_deps: clean ($nincl sources, $ntargets targets, $nfile file rules)"
exit 0
