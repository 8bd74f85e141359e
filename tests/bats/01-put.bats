#!/usr/bin/env bats
# dq-put: raw images in, messages out; create-only writes; rejected input.

load helpers
load local # the local store's metadata files, for the faults put into them

setup() {
	dq_env
}

@test "dq-put stores a JPEG and a PNG and prints their messages" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png"
	assert_success
	assert_equal "$(wc -l <<<"$output")" 2
	local id1 id2
	id1=$(head -1 <<<"$output" | jq -r .message.image_id)
	id2=$(tail -1 <<<"$output" | jq -r .message.image_id)
	raw_holds "$id1" "$FIXTURES/a.jpg"
	raw_holds "$id2" "$FIXTURES/b.png"
	assert_equal "$(raw_count)" 2
	run jq -c '.message | {sku: .metadata.product_sku, fac: .metadata.facility, src: .metadata.source_blob,
		ct: .metadata.content_type, w: .image.width, h: .image.height, size: .image.size}' <<<"$(head -1 <<<"$output")"
	assert_output "{\"sku\":\"WK-KN-200\",\"fac\":\"yangjiang\",\"src\":{\"container\":\"raw-images\",\"blob_name\":\"$id1.jpg\"},\"ct\":\"image/jpeg\",\"w\":64,\"h\":48,\"size\":$(stat -c %s "$FIXTURES/a.jpg")}"
}

@test "the message carries the image's SHA-256 and an RFC 3339 UTC time" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/c.webp"
	assert_success
	assert_equal "$(jq -r .message.image.sha256 <<<"$output")" "$(sha256sum "$FIXTURES/c.webp" | cut -d' ' -f1)"
	assert_equal "$(jq -r .message.metadata.content_type <<<"$output")" image/webp
	[[ "$(jq -r .message.ingested_at <<<"$output")" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]]
}

@test "--extra is kept as metadata.extra" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '{"line":3,"camera":"c2"}' "$FIXTURES/a.jpg"
	assert_success
	assert_json_equal "$(jq -c .message.metadata.extra <<<"$output")" '{"line":3,"camera":"c2"}'
}

@test "dq-put --id of the same file twice reports existing with the original message" {
	local id=6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f0c11
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	local first=$output
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	assert_equal "$(jq .stored.existing <<<"$output")" true
	assert_json_equal "$(jq -c .message <<<"$output")" "$(jq -c .message <<<"$first")"
	assert_equal "$(jq .stored.existing <<<"$first")" null
}

@test "dq-put --id of a different file exits 65 and keeps the first" {
	local id=6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f0c12
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/d.jpg"
	assert_failure 65
	assert_equal "$(jq -r .error.code <<<"$output")" conflict
	assert_equal "$(jq -r .file <<<"$output")" "$FIXTURES/d.jpg"
	raw_holds "$id" "$FIXTURES/a.jpg"
}

@test "dq-put --stored rebuilds the message of a stored image, equal to the original" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '{"k":[1,2.5,"ü"]}' "$FIXTURES/b.png"
	assert_success
	local orig=$output id
	id=$(jq -r .message.image_id <<<"$orig")
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_json_equal "$output" "$(jq -c '{message}' <<<"$orig")"
}

@test "dq-put --stored without ids lists raw images that have no artifact" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png"
	local done_id todo_id
	done_id=$(head -1 <<<"$output" | jq -r .message.image_id)
	todo_id=$(tail -1 <<<"$output" | jq -r .message.image_id)
	# an artifact for the first
	head -1 <<<"$output" | jq -c '. + {artifact: {image_id: .message.image_id}}' | dq-put >/dev/null 2>&1
	run --separate-stderr dq-put --stored
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$todo_id"
	# --all lists the analyzed one too
	run --separate-stderr dq-put --stored --all
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output" | sort)" "$(printf '%s\n' "$done_id" "$todo_id" | sort)"
}

@test "a text file gives an error record naming the file, exit 65, nothing stored" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/text.txt"
	assert_failure 65
	assert_equal "$(jq -r .file <<<"$output")" "$FIXTURES/text.txt"
	assert_equal "$(jq -r .error.code <<<"$output")" not_an_image
	assert_equal "$(jq -r .error.scope <<<"$output")" record
	assert_equal "$(jq -r .error.retryable <<<"$output")" false
	assert_equal "$(raw_count)" 0
}

@test "a truncated JPEG is rejected and nothing is stored" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/truncated.jpg"
	assert_failure 65
	assert_equal "$(jq -r .error.code <<<"$output")" truncated_image
	assert_equal "$(raw_count)" 0
}

# damaged KIND FIXTURE: a copy of FIXTURE, whole in structure, spoilt
# inside by tests/bats/corrupt.py KIND; prints its path.
damaged() {
	local out=$BATS_TEST_TMPDIR/$1-${2##*/}
	"$BATS_TEST_DIRNAME/corrupt.py" "$1" "$FIXTURES/$2" >"$out" || return 1
	echo "$out"
}

@test "an image whole in structure but corrupt inside is rejected as corrupt_image, the others stored" {
	local kind fixture f kind_fixture
	for kind_fixture in jpeg-scan:a.jpg jpeg-cut:d.jpg png-idat:b.png png-crc:b.png webp-cut:c.webp; do
		kind=${kind_fixture%%:*} fixture=${kind_fixture#*:}
		f=$(damaged "$kind" "$fixture")
		run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$f"
		assert_failure 65
		assert_equal "$(head -1 <<<"$output" | jq -r .stored.blob_name | cut -d. -f2)" jpg
		assert_equal "$(tail -1 <<<"$output" | jq -r '[.file, .error.code, .error.retryable] | join(" ")')" "$f corrupt_image false"
		assert_equal "$(jq -r 'select(.event == "rejected") | .code' <<<"$stderr")" corrupt_image
	done
	# the good one of each run, nothing of the damaged ones
	assert_equal "$(dq-put --stored --all 2>/dev/null | jq -r .message.metadata.source_blob.blob_name | sed 's/.*\.//' | sort | uniq -c | awk '{print $2 "=" $1}')" jpg=5
}

@test "images in every encoding a camera may use are stored; each with its data spoilt is refused" {
	local image_test=$DQ_BUILD/tests/unit/image-test f kind
	[ -x "$image_test" ] || fail "$image_test is not built: run 'make tests/unit/image-test'"
	mkdir "$BATS_TEST_TMPDIR/v" "$BATS_TEST_TMPDIR/x"
	"$image_test" variants "$BATS_TEST_TMPDIR/v" >/dev/null
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/v"/*
	assert_success
	assert_equal "$(jq -r .message.metadata.content_type <<<"$output" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')" \
		"image/jpeg=6 image/png=5 image/webp=2 "
	for f in "$BATS_TEST_TMPDIR/v"/*; do
		case $f in
		*.jpg) kind=jpeg-scan ;;
		*.png) kind=png-idat ;;
		*.webp) kind=webp-cut ;;
		esac
		"$BATS_TEST_DIRNAME/corrupt.py" "$kind" "$f" >"$BATS_TEST_TMPDIR/x/${f##*/}"
	done
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/x"/*
	assert_failure 65
	assert_equal "$(jq -r .error.code <<<"$output" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')" \
		"bad_header=1 corrupt_image=12 "
}

@test "a directory given as a file is refused with 66, not an I/O error" {
	mkdir "$BATS_TEST_TMPDIR/dir.jpg"
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/dir.jpg" "$FIXTURES/b.png"
	assert_failure 66
	assert_equal "$(head -1 <<<"$output" | jq -r '[.error.code, .error.message] | join(": ")')" "not_a_file: a directory, not a regular file"
	assert_equal "$(tail -1 <<<"$output" | jq -r .message.metadata.content_type)" image/png
	assert_equal "$(raw_count)" 1
}

@test "a FIFO given as a file is refused at once with 66, never read" {
	mkfifo "$BATS_TEST_TMPDIR/cam.jpg"
	# no writer ever opens it: a blocking open would hang until the timeout
	run --separate-stderr timeout -k 5 20 dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/cam.jpg" "$FIXTURES/a.jpg"
	assert_failure 66
	assert_equal "$(head -1 <<<"$output" | jq -r '[.file, .error.code, .error.message] | join(" ")')" \
		"$BATS_TEST_TMPDIR/cam.jpg not_a_file a FIFO, not a regular file"
	assert_equal "$(tail -1 <<<"$output" | jq -r .message.metadata.content_type)" image/jpeg
	assert_equal "$(raw_count)" 1
}

@test "good files are stored even when one in the list is bad" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/text.txt" "$FIXTURES/b.png"
	assert_failure 65
	assert_equal "$(jq -r 'if .message then "ok" else .error.code end' <<<"$output" | tr '\n' ' ')" "ok not_an_image ok "
}

@test "a missing file exits 66" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/nope.jpg"
	assert_failure 66
	assert_equal "$(jq -r .error.code <<<"$output")" no_such_file
}

@test "output to /dev/full exits 74" {
	run --separate-stderr sh -c 'dq-put --sku WK-KN-200 --facility yangjiang "$1" >/dev/full' sh "$FIXTURES/a.jpg"
	assert_failure 74
}

@test "no store configured exits 78 naming the variables to set" {
	no_backend
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_failure 78
	assert_output ""
	assert_equal "$(jq -r .event <<<"$stderr")" system_error
	[[ "$stderr" == *DQ_LOCAL_DIR* ]]
	[[ "$stderr" == *AZURE_STORAGE_CONNECTION_STRING* ]]
}

@test "an Azure variable never falls back to the local store" {
	local_only "the local store's directory is not created"
	export AZURE_STORAGE_ACCOUNT=someaccount
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_failure 78
	[ ! -d "$(local_store_dir)" ]
}

@test "usage errors exit 64 with the synopsis on stderr" {
	run --separate-stderr dq-put "$FIXTURES/a.jpg"
	assert_failure 64
	[[ "$stderr" == *"--sku and --facility are required"* ]]
	[[ "$stderr" == *"usage: dq-put"* ]]
	run --separate-stderr dq-put --sku 'bad sku' --facility x "$FIXTURES/a.jpg"
	assert_failure 64
	run --separate-stderr dq-put --bogus
	assert_failure 64
}

@test "-h prints the usage on stdout and --version the version" {
	run --separate-stderr dq-put -h
	assert_success
	assert_line --index 0 --partial "usage: dq-put --sku SKU"
	run --separate-stderr dq-put --version
	assert_success
	assert_output --regexp '^dq-put [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "--extra that is not an object, too deep or too large is a usage error" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '[1]' "$FIXTURES/a.jpg"
	assert_failure 64
	[[ "$stderr" == *"must be a JSON object"* ]]
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '{"a":[[[[[[[[1]]]]]]]]}' "$FIXTURES/a.jpg"
	assert_failure 64
	[[ "$stderr" == *"deeper than 8"* ]]
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra "{\"a\":\"$(head -c 5000 /dev/zero | tr '\0' x)\"}" "$FIXTURES/a.jpg"
	assert_failure 64
	[[ "$stderr" == *"exceeds 4096 bytes"* ]]
	assert_equal "$(raw_count)" 0
	# brackets inside strings are text, not nesting
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '{"s":"[[[[[[[[[[{{{{"}' "$FIXTURES/a.jpg"
	assert_success
}

@test "dq-put --stored of an image whose metadata is lost is a record error, the others still come" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png"
	local lost kept
	lost=$(head -1 <<<"$output" | jq -r .message.image_id)
	kept=$(tail -1 <<<"$output" | jq -r .message.image_id)
	local_only "a metadata file removed"
	rm "$(local_meta raw-images "$lost.jpg")"
	run --separate-stderr dq-put --stored "$lost" "$kept"
	assert_failure 65
	assert_equal "$(head -1 <<<"$output" | jq -r .error.code)" bad_metadata
	assert_equal "$(tail -1 <<<"$output" | jq -r .message.image_id)" "$kept"
	run --separate-stderr dq-put --stored 0000
	assert_failure 65
	assert_equal "$(jq -r .error.code <<<"$output")" bad_id
	run --separate-stderr dq-put --stored 6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f0c99
	assert_failure 66
	assert_equal "$(jq -r .error.code <<<"$output")" not_found
}

@test "an id names one image: --id X of a PNG after a JPEG is a conflict (65), one image kept" {
	local id=6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f0c21
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	local first=$output
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/b.png"
	assert_failure 65
	assert_equal "$(jq -r '.error.code, .error.scope, .error.retryable, .file' <<<"$output" | tr '\n' ' ')" \
		"conflict record false $FIXTURES/b.png "
	[[ "$(jq -r .error.message <<<"$output")" == *"$id.jpg"* ]]
	assert_equal "$(log_events "$stderr" | tail -1)" rejected
	# the store still answers with the first image only
	run --separate-stderr dq-put --stored $id
	assert_success
	assert_json_equal "$output" "$(jq -c '{message}' <<<"$first")"
	assert_equal "$(raw_count)" 1
}

@test "the file's base name is kept as metadata.file_name, before extra; --stored rebuilds it" {
	mkdir -p "$BATS_TEST_TMPDIR/in"
	cp "$FIXTURES/a.jpg" "$BATS_TEST_TMPDIR/in/line 3 shot-7.jpg"
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra '{"k":1}' \
		"$BATS_TEST_TMPDIR/in/line 3 shot-7.jpg"
	assert_success
	local orig=$output id
	id=$(jq -r .message.image_id <<<"$orig")
	assert_equal "$(jq -r .message.metadata.file_name <<<"$orig")" "line 3 shot-7.jpg"
	assert_equal "$(jq -c '.message.metadata | keys_unsorted' <<<"$orig")" \
		'["product_sku","facility","source_blob","content_type","file_name","extra"]'
	# never a blob name
	assert_equal "$(jq -r .message.metadata.source_blob.blob_name <<<"$orig")" "$id.jpg"
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_equal "$output" "$(jq -c '{message}' <<<"$orig")"
}

@test "file_name: control characters and invalid UTF-8 become '_', other UTF-8 stays" {
	local name
	name=$(printf 'caf\303\251 \001bad\377.jpg')
	cp "$FIXTURES/a.jpg" "$BATS_TEST_TMPDIR/$name"
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$BATS_TEST_TMPDIR/$name"
	assert_success
	assert_equal "$(jq -r .message.metadata.file_name <<<"$output")" "café _bad_.jpg"
	# the record's file is the path, made valid UTF-8
	assert_equal "$(jq -r .file <<<"$output")" "$BATS_TEST_TMPDIR/$(printf 'caf\303\251 \001bad\357\277\275.jpg')"
	run --separate-stderr dq-put --stored "$(jq -r .message.image_id <<<"$output")"
	assert_success
	assert_equal "$(jq -r .message.metadata.file_name <<<"$output")" "café _bad_.jpg"
}

@test "dq-put rerun after a store failure between image and metadata completes the image" {
	local id=6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f0c22
	# The metadata cannot be written: a directory where its file goes.
	local_only "a directory where a metadata file goes"
	mkdir -p "$(local_meta raw-images "$id.jpg")"
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_failure 74
	assert_output ""
	assert_equal "$(log_events "$stderr" | tail -1)" system_error
	rmdir "$(local_meta raw-images "$id.jpg")"
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	assert_equal "$(jq -c '[.message.image_id, .stored.repaired, .stored.existing]' <<<"$output")" "[\"$id\",true,null]"
	local rec=$output
	run --separate-stderr dq-put --stored $id
	assert_success
	assert_equal "$output" "$(jq -c '{message}' <<<"$rec")"
	# and a third run finds it whole
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --id $id "$FIXTURES/a.jpg"
	assert_success
	assert_equal "$(jq -c '.stored.existing' <<<"$output")" true
	assert_equal "$(jq -c .message <<<"$output")" "$(jq -c .message <<<"$rec")"
}

@test "a JPEG and a PNG stored under one id at the same time: at most one stays, the other is a conflict" {
	local i ids=()
	mkdir -p "$BATS_TEST_TMPDIR/out"
	for i in $(seq 20); do
		ids+=("$(printf '6f1c2c1e-8a51-4f4e-9f5a-0b6a4a8f%04x' "$i")")
	done
	for i in $(seq 20); do
		dq-put --sku WK-KN-200 --facility yangjiang --id "${ids[i - 1]}" "$FIXTURES/a.jpg" \
			>"$BATS_TEST_TMPDIR/out/$i.jpg.out" 2>/dev/null &
		dq-put --sku WK-KN-200 --facility yangjiang --id "${ids[i - 1]}" "$FIXTURES/b.png" \
			>"$BATS_TEST_TMPDIR/out/$i.png.out" 2>/dev/null &
	done
	wait
	# the raw images of each id, whole or not, as the store lists them
	dq-put --stored --all 2>/dev/null | jq -r '.message.image_id // .blob[0:36]' >"$BATS_TEST_TMPDIR/listed"
	for i in $(seq 20); do
		local id=${ids[i - 1]} blobs ok
		blobs=$(grep -cx "$id" "$BATS_TEST_TMPDIR/listed" || :) # 0: both lost the race
		ok=$(cat "$BATS_TEST_TMPDIR/out/$i".*.out | jq -s '[.[] | select(.message)] | length')
		[ "$blobs" -le 1 ] || fail "$id: $blobs images"
		assert_equal "$ok" "$blobs"
		assert_equal "$(cat "$BATS_TEST_TMPDIR/out/$i".*.out | jq -r 'select(.error) | .error.code' | sort -u | grep -vx conflict)" ""
		if [ "$blobs" -eq 1 ]; then
			run --separate-stderr dq-put --stored "$id"
			assert_success
			assert_equal "$(jq -r .message.image_id <<<"$output")" "$id"
		fi
	done
}

@test "dq-put --stored of an image whose metadata file is a FIFO is a record error, not a hang" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png"
	local odd kept
	odd=$(head -1 <<<"$output" | jq -r .message.image_id)
	kept=$(tail -1 <<<"$output" | jq -r .message.image_id)
	local_only "a FIFO where a metadata file goes"
	rm "$(local_meta raw-images "$odd.jpg")"
	mkfifo "$(local_meta raw-images "$odd.jpg")"
	run --separate-stderr timeout -k 5 20 dq-put --stored "$odd" "$kept"
	assert_failure 65
	assert_equal "$(head -1 <<<"$output" | jq -r .error.code)" bad_metadata
	assert_equal "$(tail -1 <<<"$output" | jq -r .message.image_id)" "$kept"
}
