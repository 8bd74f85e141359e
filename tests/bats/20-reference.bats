#!/usr/bin/env bats
# The reference analyzer, driven directly through tests/unit/reference-test,
# on images drawn by dq-synth.  Development seeds 1 and 2 live here; the
# held-out seed is in bench/analyzer-eval.sh and nowhere else.

load helpers

REFAN="$DQ_BUILD/tests/unit/reference-test"
SKU=WK-KN-200

setup_file() {
	local d=$BATS_FILE_TMPDIR
	dq-synth -s 1 -o "$d/s1" --refs 5 --good 5 --defects 10
	dq-synth -s 2 -o "$d/s2" -W 1200 -H 900 -f webp --refs 4 --good 3 --defects 5
	"$DQ_BUILD/tests/unit/reference-test" -c "$d/cache" eval "$d/s1" >"$d/s1.eval"
	# defects of colour at about the steel's brightness, pits and dents
	dq-synth -s 3 -o "$d/s3" --refs 5 --good 3 --defects 10 --kinds rust_tint,heat_tint,residue,pit,dent
	"$DQ_BUILD/tests/unit/reference-test" -c "$d/cache" eval "$d/s3" >"$d/s3.eval"
}

setup() {
	dq_env
	export DQ_CACHE_DIR="$BATS_TEST_TMPDIR/cache"
	S1=$BATS_FILE_TMPDIR/s1
	S2=$BATS_FILE_TMPDIR/s2
	S3=$BATS_FILE_TMPDIR/s3
}

@test "dq-synth: usage errors exit 64 with a reason" {
	run --separate-stderr dq-synth -o "$BATS_TEST_TMPDIR/x"
	assert_equal "$status" 64
	assert_equal "$output" ""
	[[ $stderr == *"-s SEED and -o DIR are required"* ]]
	run --separate-stderr dq-synth -s 1 -o "$BATS_TEST_TMPDIR/x" -f gif
	assert_equal "$status" 64
	run --separate-stderr dq-synth -s 1 -o "$BATS_TEST_TMPDIR/x" --good many
	assert_equal "$status" 64
	run --separate-stderr dq-synth -s 1 -o "$BATS_TEST_TMPDIR/x" --kinds chip,rainbow
	assert_equal "$status" 64
	[[ $stderr == *"--kinds: unknown kind 'rainbow'"* ]]
	[ ! -e "$BATS_TEST_TMPDIR/x" ]
}

@test "dq-synth: the same seed gives the same bytes, another seed other bytes" {
	local t=$BATS_TEST_TMPDIR
	dq-synth -s 5 -o "$t/a" -W 320 -H 240 --refs 2 --good 1 --defects 5
	dq-synth -s 5 -o "$t/b" -W 320 -H 240 --refs 2 --good 1 --defects 5
	dq-synth -s 6 -o "$t/c" -W 320 -H 240 --refs 2 --good 1 --defects 5
	run diff -r "$t/a" "$t/b"
	assert_success
	run cmp -s "$t/a/samples/chip-002.jpg" "$t/c/samples/chip-002.jpg"
	assert_failure
}

@test "dq-synth: writes references, samples and one truth line per sample" {
	run ls "$S1/reference/$SKU"
	assert_output "$(printf 'ref-%02d.png\n' 1 2 3 4 5)"
	run jq -r '.file' "$S1/truth.jsonl"
	assert_equal "${#lines[@]}" 15
	assert_line --index 0 samples/good-001.jpg
	assert_line --index 5 samples/chip-006.jpg
	assert_line --index 9 samples/bent_tip-010.jpg
	for f in $(jq -r '.file' "$S1/truth.jsonl"); do [ -s "$S1/$f" ]; done
	# every defect has one box inside the 1600x1200 frame, good ones none
	run jq -c 'select(.defect and ((.boxes|length) != 1 or (.boxes[0] | .x < 0 or .y < 0 or .width < 1 or .height < 1 or .x + .width > 1600 or .y + .height > 1200)))' "$S1/truth.jsonl"
	assert_output ""
	run jq -c 'select((.defect|not) and (.boxes|length) != 0)' "$S1/truth.jsonl"
	assert_output ""
	# the formats asked for
	run head -c 12 "$S2/samples/good-001.webp"
	[[ $output == RIFF*WEBP ]]
}

@test "every injected defect found with a box of IoU >= 0.5, no good image flagged (seed 1, JPEG)" {
	local e=$BATS_FILE_TMPDIR/s1.eval
	run jq -c 'select(.defect != .detected)' "$e"
	assert_output ""
	run jq -c 'select(.defect and (.iou | min) < 0.5)' "$e"
	assert_output ""
	run jq -s '[.[] | select(.defect and .detected)] | length' "$e"
	assert_output 10
	run jq -s '[.[] | select((.defect | not) and (.detected | not) and .type == "none" and .severity == "none" and (.boxes | length) == 0)] | length' "$e"
	assert_output 5
}

@test "defect types: chip, edge_irregularity, scratch, rust, bend for the injected kinds" {
	run jq -r 'select(.defect) | "\(.kind) \(.type)"' "$BATS_FILE_TMPDIR/s1.eval"
	assert_output "$(printf '%s\n' 'chip chip' 'wavy edge_irregularity' 'scratch scratch' \
		'rust rust' 'bent_tip bend' 'chip chip' 'wavy edge_irregularity' \
		'scratch scratch' 'rust rust' 'bent_tip bend')"
}

@test "colour of the steel's brightness is seen: rust, discoloration, contamination found and named; no good image flagged" {
	local e=$BATS_FILE_TMPDIR/s3.eval
	# the drawn tints change luma by under 4%: colour is what tells them
	run jq -c 'select(.defect != .detected or (.defect and (.iou | min) < 0.4))' "$e"
	assert_output ""
	run jq -r 'select(.kind | IN("rust_tint", "heat_tint", "residue")) | "\(.kind) \(.type)"' "$e"
	assert_output "$(printf '%s\n' 'rust_tint rust' 'heat_tint discoloration' 'residue contamination' \
		'rust_tint rust' 'heat_tint discoloration' 'residue contamination')"
	# brightness alone (chroma_weight 0) misses the rust tint at the default threshold
	local r=$BATS_TEST_TMPDIR/refs
	mkdir -p "$r"
	cp -r "$S3/reference/$SKU" "$r/"
	echo '{"chroma_weight": 0}' >"$r/$SKU/reference.json"
	run --separate-stderr "$REFAN" -r "$r" analyze "$S3/samples/rust_tint-004.jpg"
	assert_success
	assert_equal "$(jq -r '.defect_findings.defect_detected' <<<"$output")" false
	run --separate-stderr "$REFAN" -r "$S3/reference" analyze "$S3/samples/rust_tint-004.jpg"
	assert_success
	run jq -r '.defect_findings | [.defect_detected, .defect_type, (.description | test("orange-brown region"))] | @tsv' <<<"$output"
	assert_output "$(printf 'true\trust\ttrue')"
}

@test "kinds from the region itself: a pit, a dent and a scratch are not edge defects" {
	run jq -r 'select(.kind | IN("pit", "dent")) | "\(.kind) \(.type)"' "$BATS_FILE_TMPDIR/s3.eval"
	assert_output "$(printf '%s\n' 'pit chip' 'dent other' 'pit chip' 'dent other')"
	run --separate-stderr "$REFAN" -r "$S3/reference" analyze "$S3/samples/pit-007.jpg" "$S3/samples/dent-008.jpg"
	assert_success
	assert_line --index 0 --regexp '"description":"dark region [0-9]+×[0-9]+ px on the part \(a pit\), [0-9.]+× the threshold"'
	assert_line --index 1 --regexp '"description":"bright region [0-9]+×[0-9]+ px on the part \(a bright spot \(a dent\?\)\)'
	run jq -r 'select(.kind == "scratch") | .type' "$BATS_FILE_TMPDIR/s1.eval"
	assert_output "$(printf 'scratch\nscratch')"
}

@test "severity is graded from size and contrast: minor, major and critical all occur; the SKU's limits move it" {
	run sh -c "cat '$BATS_FILE_TMPDIR/s1.eval' '$BATS_FILE_TMPDIR/s3.eval' | jq -r 'select(.defect) | .severity' | sort | uniq -c | wc -l"
	assert_output 3
	local r=$BATS_TEST_TMPDIR/refs
	mkdir -p "$r"
	cp -r "$S1/reference/$SKU" "$r/"
	# limits so high that every region is minor
	echo '{"major_area": 50, "critical_area": 60, "major_ratio": 90, "critical_ratio": 95}' >"$r/$SKU/reference.json"
	run --separate-stderr "$REFAN" -r "$r" analyze "$S1/samples/rust-009.jpg" "$S1/samples/chip-006.jpg"
	assert_success
	run jq -r '[.defect_findings.defect_detected, .defect_findings.severity, ([.analysis.regions[].severity] | unique | join(","))] | @tsv' <<<"$output"
	assert_output "$(printf 'true\tminor\tminor\ntrue\tminor\tminor')"
	# and limits that contradict each other are refused
	echo '{"major_ratio": 6, "critical_ratio": 5}' >"$r/$SKU/reference.json"
	run --separate-stderr "$REFAN" -r "$r" analyze "$S1/samples/rust-009.jpg"
	assert_equal "$status" 78
	[[ $output == *'"code":"bad_thresholds"'* ]]
}

@test "a cache file partly overwritten fails its checksum, is rebuilt (logged) and gives the same bytes" {
	local f=$S1/samples/chip-006.jpg
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f"
	assert_success
	local first=$output model
	model=$(ls "$DQ_CACHE_DIR"/*.model)
	# garbage over 8 KB in the middle of the planes, the size unchanged
	head -c 8192 /dev/urandom | dd of="$model" bs=1 seek=3000000 conv=notrunc status=none
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f"
	assert_success
	assert_equal "$output" "$first"
	run jq -r 'select(.event == "cache_corrupt" or .event == "reference_model") | [.event, .level, .reason // "-"] | @tsv' <<<"$stderr"
	assert_output "$(printf 'cache_corrupt\tWARNING\tchecksum mismatch\nreference_model\tINFO\t-')"
	# the rebuilt file is whole: the next process loads it without a word
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f"
	assert_success
	assert_equal "$output" "$first"
	assert_equal "$stderr" ""
	# a truncated file is rebuilt too
	truncate -s 5000000 "$model"
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f"
	assert_success
	assert_equal "$output" "$first"
	[[ $stderr == *'"event":"cache_corrupt"'*'"reason":"the wrong size"'* ]]
}

@test "WebP at 1200x900, four threads at once: same results as one thread, all found" {
	run --separate-stderr "$REFAN" -j 4 eval "$S2"
	assert_success
	local four=$output
	run --separate-stderr "$REFAN" -j 1 eval "$S2"
	assert_success
	assert_equal "$(jq -c 'del(.ms)' <<<"$four")" "$(jq -c 'del(.ms)' <<<"$output")"
	run jq -c 'select(.defect != .detected or (.defect and (.iou | min) < 0.5))' <<<"$four"
	assert_output ""
}

@test "the same image twice gives the same bytes, from a fresh model and from the cache" {
	local f=$S1/samples/wavy-007.jpg
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f" "$f"
	assert_success
	assert_equal "${#lines[@]}" 2
	assert_equal "${lines[0]}" "${lines[1]}"
	local first=${lines[0]}
	# the model is now cached, beside the index of its references' hashes;
	# a new process loads it and answers the same
	run ls "$DQ_CACHE_DIR"
	assert_equal "${#lines[@]}" 2
	assert_line --regexp "^$SKU\.[0-9a-f]{64}\.model$"
	assert_line --regexp "^$SKU\.[0-9a-f]{16}\.index$"
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$f"
	assert_success
	assert_equal "$output" "$first"
	[[ $stderr != *reference_model* ]]
}

@test "findings: the artifact's keys in order, the vocabulary, boxes inside the image" {
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$S1/samples/chip-006.jpg" "$S1/samples/good-001.jpg"
	assert_success
	local chip=${lines[0]} good=${lines[1]}
	run jq -c '.defect_findings | keys_unsorted' <<<"$chip"
	assert_output '["defect_detected","defect_type","severity","description","confidence","bounding_boxes"]'
	run jq -r '.model_version, .analysis.analyzer, .analysis.reference.sku, .analysis.reference.images, .analysis.working_width, .analysis.working_height' <<<"$chip"
	assert_output "$(printf '%s\n' dq-reference-2 reference "$SKU" 5 800 600)"
	run jq -r '.defect_findings | [.defect_detected, .defect_type, (.severity | IN("minor","major","critical")), (.confidence >= 0.5 and .confidence <= 1), (.confidence | tostring | test("^(0|1)(\\.[0-9]{1,4})?$"))] | @tsv' <<<"$chip"
	assert_output "$(printf 'true\tchip\ttrue\ttrue\ttrue')"
	run jq -r '.defect_findings.description' <<<"$chip"
	assert_output --regexp '^dark region [0-9]+×[0-9]+ px on the outline, the edge up to [0-9]+ px from where it belongs, [0-9.]+× the threshold$'
	run jq -c '.defect_findings.bounding_boxes[] | select(.x < 0 or .y < 0 or .width < 1 or .height < 1 or .x + .width > 1600 or .y + .height > 1200)' <<<"$chip"
	assert_output ""
	run jq -c '.defect_findings | [.defect_detected, .defect_type, .severity, .bounding_boxes]' <<<"$good"
	assert_output '[false,"none","none",[]]'
}

@test "a SKU without references is a record error naming the directory to fill" {
	run --separate-stderr "$REFAN" -r "$S1/reference" -s WK-KN-999 analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 65
	run jq -r '.error | [.code, .scope, .status, .message] | @tsv' <<<"$output"
	assert_output "$(printf 'no_reference\trecord\t65\tno reference images for SKU WK-KN-999: put known-good images in %s/WK-KN-999/' "$S1/reference")"
	mkdir -p "$BATS_TEST_TMPDIR/refs/EMPTY"
	touch "$BATS_TEST_TMPDIR/refs/EMPTY/notes.txt"
	cp -r "$S1/reference/$SKU" "$BATS_TEST_TMPDIR/refs/"
	run --separate-stderr "$REFAN" -r "$BATS_TEST_TMPDIR/refs" -s EMPTY analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 65
	[[ $output == *'"code":"no_reference"'* && $output == *"$BATS_TEST_TMPDIR/refs/EMPTY/"* ]]
}

@test "no SKU's references at all is the setting's fault, not the record's: a system error, 78" {
	# one level too deep: every record would fail alike
	run --separate-stderr "$REFAN" -r "$S1/reference/$SKU" analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 78
	run jq -r '.error | [.code, .scope, (.message | test("holds images .* but no SKU directory"))] | @tsv' <<<"$output"
	assert_output "$(printf 'bad_reference_dir\tsystem\ttrue')"
	mkdir -p "$BATS_TEST_TMPDIR/refs/EMPTY"
	run --separate-stderr "$REFAN" -r "$BATS_TEST_TMPDIR/refs" -s EMPTY analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 78
	[[ $output == *'"code":"bad_reference_dir"'* ]]
}

@test "an unreadable reference directory or a corrupt reference is a system error, 78" {
	touch "$BATS_TEST_TMPDIR/notadir"
	run --separate-stderr "$REFAN" -r "$BATS_TEST_TMPDIR/notadir" analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 78
	run jq -r '.error | [.code, .scope] | @tsv' <<<"$output"
	assert_output "$(printf 'reference_unreadable\tsystem')"
	mkdir -p "$BATS_TEST_TMPDIR/bad/$SKU"
	cp "$S1/reference/$SKU/ref-01.png" "$BATS_TEST_TMPDIR/bad/$SKU/"
	head -c 5000 "$S1/reference/$SKU/ref-02.png" >"$BATS_TEST_TMPDIR/bad/$SKU/ref-02.png"
	run --separate-stderr "$REFAN" -r "$BATS_TEST_TMPDIR/bad" analyze "$S1/samples/good-001.jpg" "$S1/samples/good-002.jpg"
	assert_equal "$status" 78
	assert_equal "${#lines[@]}" 1
	run jq -r '.error | [.code, .scope, (.message | contains("ref-02.png"))] | @tsv' <<<"$output"
	assert_output "$(printf 'bad_reference\tsystem\ttrue')"
}

@test "a reference unlike the others is a system error naming it" {
	local r=$BATS_TEST_TMPDIR/refs/$SKU
	mkdir -p "$r"
	cp "$S1/reference/$SKU"/ref-0[123].png "$r/"
	python3 - "$r/ref-04.png" <<-'EOF'
	import struct, sys, zlib
	w, h = 1600, 1200
	raw = b''.join(b'\0' + bytes((x * 7 + y * 3) % 256 for x in range(w)) for y in range(h))
	chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
	open(sys.argv[1], 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
	    + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
	EOF
	run --separate-stderr "$REFAN" -r "$BATS_TEST_TMPDIR/refs" analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 78
	run jq -r '.error | [.code, .scope, (.message | contains("ref-04.png: unlike the other references"))] | @tsv' <<<"$output"
	assert_output "$(printf 'bad_reference\tsystem\ttrue')"
}

@test "a bad threshold file is a system error; a good one changes the model" {
	local r=$BATS_TEST_TMPDIR/refs
	mkdir -p "$r"
	cp -r "$S1/reference/$SKU" "$r/"
	echo '{"k": 5, "colour": 3}' >"$r/$SKU/reference.json"
	run --separate-stderr "$REFAN" -r "$r" analyze "$S1/samples/good-001.jpg"
	assert_equal "$status" 78
	[[ $output == *'"code":"bad_thresholds"'* && $output == *colour* ]]
	echo '{"k": 6.5, "min_area": 30}' >"$r/$SKU/reference.json"
	run --separate-stderr "$REFAN" -r "$r" analyze "$S1/samples/good-001.jpg"
	assert_success
	run jq -r '.analysis | [.threshold_k, .min_area] | @tsv' <<<"$output"
	assert_output "$(printf '6.5\t30')"
	# one model so far; the same images without the file make another,
	# since the thresholds are part of the key
	run sh -c "ls '$DQ_CACHE_DIR' | grep -c '\.model$'"
	assert_output 1
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$S1/samples/good-001.jpg"
	run sh -c "ls '$DQ_CACHE_DIR' | grep -c '\.model$'"
	assert_output 2
	run sh -c "ls -a '$DQ_CACHE_DIR' | grep -c tmp"
	assert_output 0
}

@test "an undecodable image is a permanent record error and the next image is still analyzed" {
	printf 'not an image' >"$BATS_TEST_TMPDIR/x.jpg"
	head -c 3000 "$S1/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/cut.jpg"
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$BATS_TEST_TMPDIR/x.jpg" "$BATS_TEST_TMPDIR/cut.jpg" "$S1/samples/good-001.jpg"
	assert_equal "$status" 65
	assert_equal "${#lines[@]}" 3
	run jq -r '.error.code // .defect_findings.defect_type' <<<"$output"
	assert_line --index 0 undecodable
	assert_line --index 2 none
}

@test "an image of another aspect than the references is a record error" {
	dq-synth -s 3 -o "$BATS_TEST_TMPDIR/w" -W 800 -H 400 --refs 0 --good 1 --defects 0
	run --separate-stderr "$REFAN" -r "$S1/reference" analyze "$BATS_TEST_TMPDIR/w/samples/good-001.jpg"
	assert_equal "$status" 65
	[[ $output == *'"code":"reference_mismatch"'* ]]
}

@test "the analyzer the environment chooses" {
	run --separate-stderr "$REFAN" open
	assert_equal "$status" 78
	[[ $stderr == *DQ_REFERENCE_DIR* && $stderr == *DQ_ANALYZER* && $stderr == *AZURE_AI_PROJECT_ENDPOINT* ]]
	DQ_REFERENCE_DIR=$S1/reference run --separate-stderr "$REFAN" open
	assert_success
	assert_output '{"analyzer":"reference"}'
	AZURE_AI_PROJECT_ENDPOINT=https://x.openai.azure.com/ DQ_REFERENCE_DIR=$S1/reference \
		run --separate-stderr "$REFAN" open
	assert_success
	assert_output '{"analyzer":"azure-openai"}'
	AZURE_AI_PROJECT_ENDPOINT=https://x.openai.azure.com/ DQ_ANALYZER=reference DQ_REFERENCE_DIR=$S1/reference \
		run --separate-stderr "$REFAN" open
	assert_success
	assert_output '{"analyzer":"reference"}'
}

@test "annotation: a PNG of the stored size with the box drawn around the region" {
	local f=$S1/samples/rust-009.jpg out=$BATS_TEST_TMPDIR/a.png
	run --separate-stderr "$REFAN" annotate "$f" "$out" '[{"x":100,"y":50,"width":40,"height":30}]'
	assert_success
	run python3 - "$out" <<-'EOF'
	import struct, sys, zlib
	d = open(sys.argv[1], 'rb').read()
	assert d[:8] == b'\x89PNG\r\n\x1a\n'
	w, h = struct.unpack('>II', d[16:24])
	pos, idat = 8, b''
	while pos < len(d):
	    n, = struct.unpack('>I', d[pos:pos+4]); t = d[pos+4:pos+8]
	    if t == b'IDAT': idat += d[pos+8:pos+8+n]
	    pos += 12 + n
	raw = zlib.decompress(idat); stride = w * 3 + 1
	# undo the PNG row filters
	out, prev = [], bytearray(w * 3)
	for y in range(h):
	    f = raw[y*stride]; r = bytearray(raw[y*stride+1:(y+1)*stride])
	    for i in range(len(r)):
	        a = r[i-3] if i >= 3 else 0; b = prev[i]; c = prev[i-3] if i >= 3 else 0
	        if f == 1: r[i] = (r[i] + a) & 255
	        elif f == 2: r[i] = (r[i] + b) & 255
	        elif f == 3: r[i] = (r[i] + (a + b) // 2) & 255
	        elif f == 4:
	            p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
	            r[i] = (r[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
	    out.append(r); prev = r
	px = lambda x, y: tuple(out[y][3*x:3*x+3])
	print(w, h, px(99, 60), px(120, 49), px(120, 65) != (255, 32, 32))
	EOF
	assert_success
	assert_output "1600 1200 (255, 32, 32) (255, 32, 32) True"
}

@test "dq-reference(7) examples run" {
	cd "$BATS_TEST_TMPDIR"
	local script
	script=$(awk '/^\.Sh /{ex = ($2 == "EXAMPLES")} ex && /^\$ /{sub(/^\$ /, ""); gsub(/\\e/, "\\"); print}' "$DQ_TOP/man/dq-reference.7")
	[ -n "$script" ]
	run --separate-stderr bash -euo pipefail -c "$script"
	assert_success
	assert_equal "${#lines[@]}" 2
	assert_line --index 0 --regexp '^\["chip","major",\[\{"x":[0-9]+,"y":[0-9]+,"width":[0-9]+,"height":[0-9]+\}\]\]$'
	assert_line --index 1 '["none","none",[]]'
	[ -f "$BATS_TEST_TMPDIR/cache/WK-KN-200.$(jq -r .analysis.reference.model_sha256 <<<"$(DQ_REFERENCE_DIR=$PWD/knives/reference DQ_CACHE_DIR=$PWD/cache "$REFAN" analyze knives/samples/good-001.jpg)").model" ]
}

@test "two processes building one model at once both succeed and leave one whole file" {
	local f=$S1/samples/scratch-008.jpg
	"$REFAN" -r "$S1/reference" analyze "$f" >"$BATS_TEST_TMPDIR/a.out" 2>/dev/null &
	local pa=$!
	"$REFAN" -r "$S1/reference" analyze "$f" >"$BATS_TEST_TMPDIR/b.out" 2>/dev/null &
	local pb=$!
	wait "$pa"
	wait "$pb"
	run cmp "$BATS_TEST_TMPDIR/a.out" "$BATS_TEST_TMPDIR/b.out"
	assert_success
	run jq -r '.defect_findings.defect_type' "$BATS_TEST_TMPDIR/a.out"
	assert_output scratch
	# what a writer killed mid-write left goes when it is old, not before
	rm "$DQ_CACHE_DIR"/*.model
	touch -d '-1 hour' "$DQ_CACHE_DIR/$SKU.x.model.tmp.OLD0001"
	touch "$DQ_CACHE_DIR/$SKU.x.model.tmp.NEW0001"
	"$REFAN" -r "$S1/reference" analyze "$f" >/dev/null 2>&1
	rm "$DQ_CACHE_DIR/$SKU.x.model.tmp.NEW0001"
	run ls -A "$DQ_CACHE_DIR"
	assert_equal "${#lines[@]}" 2
	assert_line --regexp "^$SKU\.[0-9a-f]{64}\.model$"
	assert_line --regexp "^$SKU\.[0-9a-f]{16}\.index$"
}
