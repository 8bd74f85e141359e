#!/usr/bin/env bats
# The reference model found through the index of its references' hashes
# (dq-reference(7), FILES): a warm start of dq-analyze reads no reference
# image, and every change to what the model is built from rebuilds it all
# the same, giving the artifact a start with an empty cache gives.

load helpers

SKU=WK-KN-200
# one reference directory per test, drawn in setup_file and left to age:
# a copy made in a test would be too recent for the index to vouch for
DIRS=(first content samesize rename touched added removed thresholds format index concurrent racy)

# aged T: the clock has reached T (for wait_for).
aged() {
	[ "$(date +%s)" -ge "$1" ]
}

setup_file() {
	local d=$BATS_FILE_TMPDIR r t newest
	dq-synth -s 29 -o "$d/synth" -W 480 -H 360 --refs 6 --good 1 --defects 1 >/dev/null 2>&1
	r=$d/synth/reference/$SKU
	# a sixth shot of the part, of its own size, to replace one of the five
	mv "$r/ref-06.png" "$d/other-size.png"
	# and the same shot padded to the others' size (a tEXt chunk before
	# IEND), to replace one byte count for byte count
	python3 - "$d/other-size.png" "$d/same-size.png" "$r"/ref-0?.png <<-'EOF'
	import os, struct, sys, zlib
	src, dst, refs = sys.argv[1], sys.argv[2], sys.argv[3:]
	size = max(os.path.getsize(f) for f in refs + [src]) + 64
	def pad(path, out):
	    d = open(path, 'rb').read()
	    text = b'dq\0' + b'x' * (size - len(d) - 15)
	    chunk = struct.pack('>I', len(text)) + b'tEXt' + text + struct.pack('>I', zlib.crc32(b'tEXt' + text))
	    open(out, 'wb').write(d[:-12] + chunk + d[-12:])
	pad(src, dst)
	for f in refs:
	    pad(f, f)
	EOF
	for t in "${DIRS[@]}"; do
		mkdir -p "$d/$t"
		cp -r "$r" "$d/$t/"
	done
	# the index trusts a stat at least two whole seconds older than its time
	newest=$(stat -c %Z "$d"/*/"$SKU"/* | sort -n | tail -n 1)
	wait_for 10 aged $((newest + 3)) || fail "the clock does not move"
}

setup() {
	dq_env
	export DQ_ANALYZER=reference LOG_LEVEL=DEBUG DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cache
	SAMPLE=$BATS_FILE_TMPDIR/synth/samples/chip-002.jpg
	SPARE=$BATS_FILE_TMPDIR/same-size.png
}

# start NAME [CACHE]: dq-analyze of the sample on NAME's references, in run.
start() {
	DQ_REFERENCE_DIR=$BATS_FILE_TMPDIR/$1 DQ_CACHE_DIR=${2:-$DQ_CACHE_DIR} \
		run --separate-stderr dq-analyze --sku "$SKU" "$SAMPLE"
}

# hashed: how many references the last start read and hashed.
hashed() {
	jq -r 'select(.event == "reference_index") | .hashed' <<<"$stderr"
}

# built: how many models the last start built.
built() {
	jq -r 'select(.event == "reference_model") | .event' <<<"$stderr" | wc -l
}

# key JSON: the model key an artifact names.
key() {
	jq -r '.artifact.analysis.reference.model_sha256' <<<"$1"
}

strip_times() {
	jq -c 'del(.artifact.timestamps.processed_at, .artifact.analysis.duration_ms)' <<<"$1"
}

# warm NAME: a first start, which builds the model; KEY0 its key, ART0 its output.
warm() {
	start "$1"
	assert_success
	assert_equal "$(built)" 1
	KEY0=$(key "$output")
	ART0=$output
}

# rebuilt NAME HASHED: after a change to NAME's references, a start on the
# warm cache hashes HASHED references, builds the model under a new key and
# writes the artifact that a start on an empty cache writes.
rebuilt() {
	start "$1"
	assert_success
	assert_equal "$(hashed)" "$2"
	assert_equal "$(built)" 1
	local warm=$output
	[ "$(key "$warm")" != "$KEY0" ] || fail "the model kept its key $KEY0"
	start "$1" "$BATS_TEST_TMPDIR/fresh"
	assert_success
	assert_equal "$(strip_times "$warm")" "$(strip_times "$output")"
	assert_equal "$(jq -r '.artifact.defect_findings.defect_type' <<<"$warm")" chip
}

# stat_of FILE: its size, mtime to the nanosecond and inode.
stat_of() {
	stat -c '%s %.9Y %i' "$1"
}

@test "a second start finds the model by the index: it reads no reference and writes the same artifact" {
	warm first
	assert_equal "$(hashed)" 5
	run ls "$DQ_CACHE_DIR"
	assert_line --regexp "^$SKU\\.[0-9a-f]{16}\\.index$"
	start first
	assert_success
	assert_equal "$(hashed)" 0
	assert_equal "$(built)" 0
	assert_equal "$(strip_times "$output")" "$(strip_times "$ART0")"
	[[ $stderr == *'"msg":"5 of 5 references of WK-KN-200 found by the index, 0 hashed'* ]]
	# the system calls say the same: the model is opened, no reference is
	# (LeakSanitizer does not run under ptrace: off for the sanitizer build)
	if command -v strace >/dev/null; then
		local t=$BATS_TEST_TMPDIR/trace
		export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
		DQ_REFERENCE_DIR=$BATS_FILE_TMPDIR/first run --separate-stderr \
			strace -f -qq -o "$t" -e trace=open,openat dq-analyze --sku "$SKU" "$SAMPLE"
		assert_success
		run grep -c "\\.model\"" "$t"
		assert_output 1
		run grep -c "/first/$SKU/ref-" "$t"
		assert_output 0
		# while a start on an empty cache opens each of them once
		DQ_REFERENCE_DIR=$BATS_FILE_TMPDIR/first DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cold \
			run --separate-stderr strace -f -qq -o "$t" -e trace=open,openat \
			dq-analyze --sku "$SKU" "$SAMPLE"
		assert_success
		run grep -c "/first/$SKU/ref-" "$t"
		assert_output 5
	fi
}

@test "the model and its index are written 0644 less the umask" {
	(
		umask 027
		DQ_REFERENCE_DIR=$BATS_FILE_TMPDIR/first dq-analyze --sku "$SKU" "$SAMPLE" >/dev/null 2>&1
	)
	run stat -c %a "$DQ_CACHE_DIR"/*.model "$DQ_CACHE_DIR"/*.index
	assert_output "$(printf '640\n640')"
}

@test "a reference whose content and size changed rebuilds the model" {
	warm content
	cp "$BATS_FILE_TMPDIR/other-size.png" "$BATS_FILE_TMPDIR/content/$SKU/ref-03.png"
	rebuilt content 1
}

@test "a reference rewritten in place with as many bytes, its mtime set back, rebuilds the model" {
	warm samesize
	local f=$BATS_FILE_TMPDIR/samesize/$SKU/ref-03.png before
	before=$(stat_of "$f")
	touch -r "$f" "$BATS_TEST_TMPDIR/stamp"
	cat "$SPARE" >"$f"
	touch -r "$BATS_TEST_TMPDIR/stamp" "$f"
	# size, mtime and inode as they were: only the ctime tells
	assert_equal "$(stat_of "$f")" "$before"
	rebuilt samesize 1
}

@test "a reference replaced by a rename, size and mtime as they were, rebuilds the model" {
	warm rename
	local f=$BATS_FILE_TMPDIR/rename/$SKU/ref-03.png before
	before=$(stat_of "$f")
	cp "$SPARE" "$f.new"
	touch -r "$f" "$f.new"
	mv "$f.new" "$f"
	[ "$(stat_of "$f" | cut -d' ' -f1,2)" = "$(cut -d' ' -f1,2 <<<"$before")" ]
	[ "$(stat_of "$f")" != "$before" ]
	rebuilt rename 1
}

@test "a reference touched, its bytes unchanged, is hashed once again and keeps the model" {
	warm touched
	local f=$BATS_FILE_TMPDIR/touched/$SKU/ref-02.png
	touch -d '-1 day' "$f"
	start touched
	assert_success
	assert_equal "$(hashed)" 1
	assert_equal "$(built)" 0
	assert_equal "$(key "$output")" "$KEY0"
	assert_equal "$(strip_times "$output")" "$(strip_times "$ART0")"
	# its ctime is new, too new for the index to vouch for it at once
	start touched
	assert_equal "$(hashed)" 1
	assert_equal "$(built)" 0
}

@test "a reference added rebuilds the model" {
	warm added
	cp "$SPARE" "$BATS_FILE_TMPDIR/added/$SKU/ref-06.png"
	rebuilt added 1
	assert_equal "$(jq -r '.artifact.analysis.reference.images' <<<"$output")" 6
}

@test "a reference removed rebuilds the model, though no reference is hashed" {
	warm removed
	rm "$BATS_FILE_TMPDIR/removed/$SKU/ref-05.png"
	rebuilt removed 0
	assert_equal "$(jq -r '.artifact.analysis.reference.images' <<<"$output")" 4
	# and the index, rewritten without it, vouches for the other four
	start removed
	assert_equal "$(hashed)" 0
	assert_equal "$(built)" 0
}

@test "reference.json changed, as many bytes, rebuilds the model with its thresholds" {
	local j=$BATS_FILE_TMPDIR/thresholds/$SKU/reference.json
	echo '{"k": 5}' >"$j"
	warm thresholds
	echo '{"k": 6}' >"$j"
	rebuilt thresholds 0
	assert_equal "$(jq -r '.artifact.analysis.threshold_k' <<<"$output")" 6
}

@test "a model file of another format under the model's name is rebuilt, whatever the index says" {
	warm format
	local m
	m=$(ls "$DQ_CACHE_DIR"/*.model)
	printf 'DQREFM1\0' | dd of="$m" conv=notrunc status=none
	start format
	assert_success
	assert_equal "$(hashed)" 0
	assert_equal "$(built)" 1
	assert_equal "$(strip_times "$output")" "$(strip_times "$ART0")"
	run jq -r 'select(.event == "cache_corrupt") | .reason' <<<"$stderr"
	assert_output "not a model of this build"
}

@test "an index truncated, overwritten or of another format is not trusted but replaced" {
	warm index
	local index kind
	index=$(ls "$DQ_CACHE_DIR"/*.index)
	# what a killed writer left goes once old, not before
	touch -d '-1 hour' "$DQ_CACHE_DIR/.tmp.OLD0001"
	touch "$DQ_CACHE_DIR/.tmp.NEW0001"
	# truncated; one byte changed; a whole file of another format
	for kind in truncated checksum foreign; do
		case $kind in
		truncated) truncate -s $(($(stat -c %s "$index") / 2)) "$index" ;;
		checksum)
			local b
			b=$(dd if="$index" bs=1 skip=300 count=1 status=none)
			printf '%s' "$([ "$b" = x ] && echo y || echo x)" |
				dd of="$index" bs=1 seek=300 conv=notrunc status=none
			;;
		foreign)
			local line
			line=$(head -n 1 "$index" | jq -c '.format = "dq-refindex-0"')
			printf '%s\n%s\n' "$line" "$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)" >"$index"
			;;
		esac
		start index
		assert_success
		[ "$(hashed)" = 5 ] || fail "$kind: $stderr"
		assert_equal "$(built)" 0
		assert_equal "$(strip_times "$output")" "$(strip_times "$ART0")"
		run jq -r 'select(.event == "cache_corrupt") | [.level, .reason] | @tsv' <<<"$stderr"
		case $kind in
		truncated) assert_output "$(printf 'WARNING\ttruncated')" ;;
		checksum) assert_output "$(printf 'WARNING\tchecksum mismatch')" ;;
		foreign) assert_output "$(printf 'WARNING\tnot an index of this build')" ;;
		esac
		# replaced by a whole one: the next start reads nothing, warns of nothing
		start index
		assert_equal "$(hashed)" 0
		run jq -r 'select(.level == "WARNING") | .event' <<<"$stderr"
		assert_output ""
	done
	run ls -A "$DQ_CACHE_DIR"
	assert_output "$(printf '%s\n' .tmp.NEW0001 "$(basename "$index")" "$(basename "$(ls "$DQ_CACHE_DIR"/*.model)")" | sort)"
}

@test "starts at once, on an empty cache and on a stale index, all succeed and agree" {
	local t=$BATS_TEST_TMPDIR round k pids
	for round in cold stale; do
		[ "$round" = cold ] || touch "$BATS_FILE_TMPDIR/concurrent/$SKU"/*.png
		pids=()
		for k in 1 2 3; do
			DQ_REFERENCE_DIR=$BATS_FILE_TMPDIR/concurrent dq-analyze --sku "$SKU" "$SAMPLE" \
				>"$t/$round.$k.out" 2>"$t/$round.$k.err" &
			pids+=($!)
		done
		for k in 1 2 3; do
			wait "${pids[$((k - 1))]}" || fail "start $k of $round failed: $(cat "$t/$round.$k.err")"
		done
		assert_equal "$(strip_times "$(cat "$t/$round.2.out")")" "$(strip_times "$(cat "$t/$round.1.out")")"
		assert_equal "$(strip_times "$(cat "$t/$round.3.out")")" "$(strip_times "$(cat "$t/$round.1.out")")"
		# on a stale index each hashes them all (a start that came later
		# on an empty cache may find the index of one that came first)
		if [ "$round" = stale ]; then
			run jq -r 'select(.event == "reference_index") | .hashed' "$t/$round".?.err
			assert_output "$(printf '5\n5\n5')"
		fi
		run jq -r 'select(.level == "WARNING") | .event' "$t/$round".?.err
		assert_output ""
	done
	# one model, one index, no temporary: the index left is whole and
	# vouches for the references once they are old enough again
	run ls -A "$DQ_CACHE_DIR"
	assert_equal "${#lines[@]}" 2
	assert_line --regexp "^$SKU\\.[0-9a-f]{64}\\.model$"
	assert_line --regexp "^$SKU\\.[0-9a-f]{16}\\.index$"
	wait_for 10 aged $(($(stat -c %Z "$BATS_FILE_TMPDIR/concurrent/$SKU/ref-01.png") + 3))
	start concurrent
	start concurrent
	assert_success
	assert_equal "$(hashed)" 0
	assert_equal "$(built)" 0
}

@test "a reference changed just before a start is hashed at every start until it is older than the index's margin" {
	warm racy
	local f=$BATS_FILE_TMPDIR/racy/$SKU/ref-03.png
	touch -r "$f" "$BATS_TEST_TMPDIR/stamp"
	cat "$SPARE" >"$f"
	touch -r "$BATS_TEST_TMPDIR/stamp" "$f"
	rebuilt racy 1
	local art=$output
	# its stat is now the one the index records, but within two seconds of
	# the index's time: a change in the same tick would have left it so
	start racy
	assert_success
	assert_equal "$(hashed)" 1
	assert_equal "$(built)" 0
	assert_equal "$(strip_times "$output")" "$(strip_times "$art")"
	run jq -r 'select(.event == "reference_index") | .racy' <<<"$stderr"
	assert_output 1
	wait_for 10 aged $(($(stat -c %Z "$f") + 3))
	# hashed once more (the index is of the last start, still too near
	# unless that start was slow), then vouched for
	start racy
	start racy
	assert_equal "$(hashed)" 0
	assert_equal "$(strip_times "$output")" "$(strip_times "$art")"
}
