# Local input: grab for 6 s, hotkeys and hold-back edges (host sends QMP input).
P=/etc/shoulder/input-probe
$P list
$P watch --seconds 16 --grab-seconds 6 --screen 1280x800 2>&1
echo "T: end"
