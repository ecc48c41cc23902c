# Shared by scripts/latency and scripts/bench-side-by-side (sourced, not run):
# an agent with a rawfile capture on 127.0.0.1 and a `shoulder watch` session
# to it, the CPU time of a process, and the matching of played frames to the
# updates a client logged.
#
# The caller sets: BIN (the release binaries), WORK (a scratch directory),
# RAW (the raw screen file, which exists), SIZE (WxH), MAX_FPS (empty for the
# agent's default), PRIO (an array: a command prefix such as nice, or empty),
# CMD_TIMEOUT, START_TIMEOUT, SESSION_TIMEOUT (seconds), and defines die().
# Optional (empty by default): BENCH_LISTEN (the agent's listen address,
# 127.0.0.1:0 when empty), BENCH_AGENT_TOP (more top-level lines of
# agent.toml) and BENCH_AGENT_TABLES (more tables at its end).
# bench_agent_start sets CONFIG, TIMEOUT_PID and AGENT_PID;
# bench_session_open sets WATCH_PID: the caller's EXIT trap stops them
# (bench_stop does).
# shellcheck shell=bash

# bench_agent_start DEVICE_NAME RUN_SECS: writes $WORK/agent.toml and starts
# the agent for at most RUN_SECS (it ends by itself even if the caller is
# killed); returns when its control socket answers.
bench_agent_start() {
    local name=$1 run_secs=$2 deadline
    CONFIG=$WORK/agent.toml
    {
        cat <<EOF
enabled = true
listen = ["${BENCH_LISTEN:-127.0.0.1:0}"]
device_name = "$name"
state_dir = "$WORK/state"
audit_log = "$WORK/audit.jsonl"
control_socket = "$WORK/run/control.sock"
capture = "rawfile:$RAW@$SIZE:XRGB8888"
EOF
        [ -n "$MAX_FPS" ] && echo "max_fps = $MAX_FPS"
        [ -n "${BENCH_AGENT_TOP:-}" ] && printf '%s\n' "$BENCH_AGENT_TOP"
        cat <<EOF

[argon2]
memory_kib = 1024
iterations = 1

[banner]
presenter = "none"

[input]
inject = "none"
local_input = ""
EOF
        [ -n "${BENCH_AGENT_TABLES:-}" ] && printf '\n%s\n' "$BENCH_AGENT_TABLES"
        true
    } > "$CONFIG"
    "${PRIO[@]}" timeout "$run_secs" "$BIN/shoulder-agent" --config "$CONFIG" run \
        </dev/null >/dev/null 2>"$WORK/agent.log" &
    TIMEOUT_PID=$!
    AGENT_PID=$TIMEOUT_PID
    deadline=$((SECONDS + START_TIMEOUT))
    until bench_agent ctl status >/dev/null 2>&1; do
        kill -0 "$TIMEOUT_PID" 2>/dev/null || { cat "$WORK/agent.log" >&2; die "the agent exited at start-up"; }
        [ $SECONDS -lt $deadline ] || die "the agent's control socket did not answer within ${START_TIMEOUT}s"
        sleep 0.1
    done
    # The agent itself (child of `timeout`), for its CPU time.
    AGENT_PID=$(cat "/proc/$TIMEOUT_PID/task/$TIMEOUT_PID/children" 2>/dev/null || pgrep -P "$TIMEOUT_PID" || true)
    AGENT_PID=${AGENT_PID%% *}
    [ -n "$AGENT_PID" ] && [ "$(cat "/proc/$AGENT_PID/comm" 2>/dev/null)" = shoulder-agent ] ||
        die "cannot find the agent's process under timeout (pid $TIMEOUT_PID)"
}

# bench_agent ARGS...: one bounded agent command (ctl ...).
bench_agent() { timeout "$CMD_TIMEOUT" "$BIN/shoulder-agent" --config "$CONFIG" "$@" </dev/null; }

# bench_session_open WATCH_SECS RUN_SECS: an invitation, `shoulder watch
# --stats-json $WORK/watch.jsonl` for WATCH_SECS, the prompt accepted through
# the control socket as the person at the device; returns once the first
# update was applied.
bench_session_open() {
    local watch_secs=$1 run_secs=$2 invitation deadline
    printf 'latency-bench-password\n' > "$WORK/password"
    invitation=$(bench_agent ctl invite --expires 2h --password-file "$WORK/password" | awk '/^SHOULDER1-/ { print; exit }')
    [ -n "$invitation" ] || die "ctl invite printed no invitation"
    "${PRIO[@]}" timeout "$run_secs" "$BIN/shoulder" watch "$invitation" --password-file "$WORK/password" \
        --stats-json "$WORK/watch.jsonl" --duration "$watch_secs" \
        </dev/null >/dev/null 2>"$WORK/watch.log" &
    WATCH_PID=$!
    deadline=$((SECONDS + SESSION_TIMEOUT))
    until bench_agent ctl accept >/dev/null 2>&1; do
        kill -0 "$WATCH_PID" 2>/dev/null || { cat "$WORK/watch.log" >&2; die "shoulder watch exited before the prompt was answered"; }
        [ $SECONDS -lt $deadline ] || die "no consent prompt within ${SESSION_TIMEOUT}s (agent log: $(tail -3 "$WORK/agent.log"))"
        sleep 0.2
    done
    until [ -s "$WORK/watch.jsonl" ]; do
        kill -0 "$WATCH_PID" 2>/dev/null || { cat "$WORK/watch.log" >&2; die "shoulder watch exited before the first update"; }
        [ $SECONDS -lt $deadline ] || die "no update within ${SESSION_TIMEOUT}s of the invitation"
        sleep 0.1
    done
}

# bench_stop PID...: TERM, up to 2 s each, then KILL; for the EXIT trap.
bench_stop() {
    local p
    for p in "$@"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "$@"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$p" 2>/dev/null || true
    done
}

TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of a process, in clock ticks
    local s
    s=$(cat "/proc/$1/stat") || die "process $1 is gone"
    s=${s##*) }
    # Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
    awk '{ print $12 + $13 }' <<<"$s"
}

# cpu_pct TICKS NANOSECONDS [DECIMALS]: that CPU time as % of one core.
cpu_pct() {
    awk -v c="$1" -v hz="$TCK" -v ns="$2" -v d="${3:-1}" \
        'BEGIN { printf "%.*f", d, 100 * (c / hz) / (ns / 1e9) }'
}

# Sleeps in the background, so a signal to the script ends them at once.
pause() { sleep "$1" & wait $!; }

# Matching frames to updates, per scenario: only the lines of the client's
# log in the scenario's window (after the lines there were when it started,
# up to those there were when its wait ended).
# Frame i (i >= 1) of a scenario is counted when its hash differs from frame
# i-1 (an unchanged frame sends nothing). Frame 0 is the switch from the
# previous scenario's screen and is not counted. Its update is the first
# watch line with its hash applied after frame i-1 was written and before the
# screen returns to the same picture later (typing repeats every 23 frames):
# ambiguous updates are not counted rather than counted wrong.
# A changed frame not matched is "coalesced" when a later frame was matched;
# if none was, the final frame was not matched either and the scenario fails.
# The client's time of an update is its t_mono_us (applied), or the field
# named by the optional 6th argument (t_recv_us: its last part read).
match_frames() { # play.jsonl watch.jsonl START END SUMMARY [KEY] -> "latency_us" lines; summary line into SUMMARY
    awk -v start="$3" -v end="$4" -v summary="$5" -v key="${6:-t_mono_us}" '
    function field(line, key,   m) {
        if (match(line, "\"" key "\":\"?[0-9a-f]+")) {
            m = substr(line, RSTART, RLENGTH); sub(/^[^:]*:"?/, "", m); return m
        }
        return ""
    }
    BEGIN { np = 0; nw = 0; file = 0; view = "" }
    FNR == 1 { file++ }
    file == 1 { pt[np] = field($0, "t_mono_us") + 0; ph[np] = field($0, "fb_hash"); np++; next }
    file == 2 {
        if (FNR > end) next
        view = field($0, "fb_hash") # the client view at the end of the window
        if (FNR <= start) next
        wt[nw] = field($0, key) + 0; wh[nw] = view; wb[nw] = field($0, "bytes") + 0; nw++
    }
    END {
        changed = 0; matched = 0; j0 = 0
        for (i = 1; i < np; i++) {
            seen[i] = 0
            if (ph[i] == ph[i - 1]) continue
            changed++
            upper = -1
            for (k = i + 1; k < np; k++) if (ph[k] == ph[i] && ph[k - 1] != ph[i]) { upper = pt[k - 1]; break }
            while (j0 < nw && wt[j0] <= pt[i - 1]) j0++
            for (j = j0; j < nw; j++) {
                if (upper >= 0 && wt[j] >= upper) break
                if (wh[j] == ph[i]) { print wt[j] - pt[i]; matched++; seen[i] = 1; break }
            }
        }
        coalesced = 0; later = 0
        for (i = np - 1; i >= 1; i--) {
            if (seen[i]) later = 1
            else if (ph[i] != ph[i - 1] && later) coalesced++
        }
        # The final picture: the last frame and the unchanged frames before it.
        last = np - 1; f = last
        while (f > 0 && ph[f - 1] == ph[last]) f--
        final_ok = f > 0 ? seen[f] : view == ph[last]
        view_frame = -1
        for (i = 0; i < np; i++) if (ph[i] == view) view_frame = i
        bytes = 0
        for (j = 0; j < nw; j++) bytes += wb[j]
        printf "%d %d %d %d %d %d %s %d %s %d\n", matched, changed, coalesced, nw, bytes,
            last, ph[last], final_ok, (view == "" ? "none" : view), view_frame > summary
    }' "$1" "$2"
}

