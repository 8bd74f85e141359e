#!/usr/bin/env bats
# lib/pixels.c, through tests/unit/image-test: fitting a size, shrinking by
# an area average, encoding in memory and decoding back, the file writers
# as the encoders, and the scaled decode that fits; failures as errors.

load helpers

setup() {
	image_test=$DQ_BUILD/tests/unit/image-test
	[ -x "$image_test" ] || fail "$image_test is not built: run 'make tests/unit/image-test'"
	dq_env
}

# field TEXT NAME: the number after NAME in image-test's line ("max diff 3").
field() {
	sed -n "s/.*$2 \([0-9.]*\).*/\1/p" <<<"$1"
}

@test "a size is fitted within a box and a pixel count, aspect kept, never enlarged" {
	local row
	# W H MAX_W MAX_H MAX_PIXELS expected
	while read -r row; do
		set -- $row
		run --separate-stderr "$image_test" fit "$1" "$2" "$3" "$4" "$5"
		assert_success
		assert_equal "$output" "$6" || fail "fit $1x$2 in $3x$4 ($5 px)"
		assert_equal "$stderr" ""
	done <<-'EOF'
		4000 3000 2048 2048 0 2048x1536
		3000 4000 2048 2048 0 1536x2048
		100 50 2048 2048 0 100x50
		2048 2048 2048 2048 0 2048x2048
		1 1 2048 2048 0 1x1
		1 1 1 1 1 1x1
		65535 1 2048 2048 0 2048x1
		1 65535 2048 2048 0 1x2048
		65535 3 2048 2048 0 2048x1
		4000 3000 4096 4096 1000000 1154x866
		1000 1000 4096 4096 1000000 1000x1000
		1001 1000 4096 4096 1000000 1000x1000
		100 101 4096 4096 10007 99x101
		104 97 4096 4096 10007 103x97
		4000 3000 100 2048 0 100x75
	EOF
}

@test "shrinking averages the area each pixel covers, whole and partial pixels" {
	# 4x2 into 2x1: two 2x2 blocks
	run --separate-stderr "$image_test" resize 2 2 0 4 2 1 10 20 30 40 50 60 70 80
	assert_success
	assert_output "2x1: 35 55"
	assert_equal "$stderr" ""
	# 3x1 into 2x1: 0 and half of 90, half of 90 and 180, over 1.5 pixels
	run --separate-stderr "$image_test" resize 2 2 0 3 1 1 0 90 180
	assert_success
	assert_output "2x1: 30 150"
	assert_equal "$stderr" ""
	# RGB channels apart; a mean of 2.5 rounds up
	run --separate-stderr "$image_test" resize 1 1 0 2 1 3 0 10 255 5 20 255
	assert_success
	assert_output "1x1: 3 15 255"
	assert_equal "$stderr" ""
}

@test "an image that already fits comes back exactly, 1x1 included" {
	run --separate-stderr "$image_test" resize 3 3 0 3 2 1 1 2 3 4 5 6
	assert_success
	assert_output "3x2: 1 2 3 4 5 6"
	assert_equal "$stderr" ""
	run --separate-stderr "$image_test" resize 1 1 0 1 1 3 7 8 9
	assert_success
	assert_output "1x1: 7 8 9"
	assert_equal "$stderr" ""
}

@test "every shrunk pixel is the rounded area mean, at any ratio and at extreme aspects" {
	local row
	# W H CH MAX_W MAX_H expected size
	while read -r row; do
		set -- $row
		run --separate-stderr "$image_test" resize-ref "$1" "$2" "$3" "$4" "$5"
		assert_success
		assert_output "$6: rounded means"
		assert_equal "$stderr" ""
	done <<-'EOF'
		1000 750 3 333 333 333x250
		7 5 3 3 3 3x2
		640 480 1 640 479 639x479
		65535 1 1 2048 2048 2048x1
		1 65535 3 2048 2048 1x2048
		300 7 3 1 1 1x1
	EOF
}

@test "PNG round trips in memory keep the size and every pixel" {
	local ch
	for ch in 1 3; do
		run --separate-stderr "$image_test" roundtrip png 320 240 "$ch"
		assert_success
		assert_output --regexp "^image/png 320x240, [0-9]+ bytes, max diff 0, mean diff 0.00$"
		assert_equal "$stderr" ""
	done
}

@test "JPEG and WebP round trips in memory keep the size, the pixels within a tolerance" {
	local kind ch
	for kind in jpeg webp; do
		for ch in 1 3; do
			run --separate-stderr "$image_test" roundtrip "$kind" 320 240 "$ch" 90
			assert_success
			assert_output --regexp "^image/$kind 320x240, [0-9]+ bytes, max diff [0-9]+, mean diff [0-9.]+$"
			assert_equal "$stderr" ""
			[ "$(field "$output" "max diff")" -le 24 ] || fail "$kind $ch: $output"
			awk -v m="$(field "$output" "mean diff")" 'BEGIN { exit !(m <= 2.5) }' || fail "$kind $ch: $output"
		done
	done
}

@test "a lower JPEG quality makes fewer bytes" {
	local high low
	run --separate-stderr "$image_test" roundtrip jpeg 320 240 3 95
	assert_success
	high=${output#*, }
	high=${high%% bytes*}
	run --separate-stderr "$image_test" roundtrip jpeg 320 240 3 30
	assert_success
	low=${output#*, }
	low=${low%% bytes*}
	[ "$low" -lt "$high" ] || fail "quality 30: $low bytes, quality 95: $high bytes"
	assert_equal "$stderr" ""
}

@test "the file writers write the in-memory encoders' bytes" {
	local kind
	for kind in png jpeg webp; do
		run --separate-stderr "$image_test" write "$kind" "$BATS_TEST_TMPDIR/out.$kind" 50 40 3
		assert_success
		assert_output "same"
		assert_equal "$stderr" ""
	done
}

@test "a file that cannot be written is a system io_error that names it" {
	run --separate-stderr "$image_test" write png "$BATS_TEST_TMPDIR/no/such/dir/out.png" 4 4 3
	assert_failure 1
	assert_output "system io_error: $BATS_TEST_TMPDIR/no/such/dir/out.png: No such file or directory"
	assert_equal "$stderr" ""
	[ ! -e "$BATS_TEST_TMPDIR/no" ]
}

@test "a raster that is no image is refused by the encoders and the resize as a record error" {
	run --separate-stderr "$image_test" roundtrip png 0 5 3
	assert_failure 1
	assert_output "record unencodable: PNG: not a raster of 1 or 3 channels within 65535x65535"
	assert_equal "$stderr" ""
	run --separate-stderr "$image_test" roundtrip jpeg 5 5 2
	assert_failure 1
	assert_output "record unencodable: JPEG: not a raster of 1 or 3 channels within 65535x65535"
	run --separate-stderr "$image_test" roundtrip webp 70000 1 3
	assert_failure 1
	assert_output "record unencodable: WebP: not a raster of 1 or 3 channels within 65535x65535"
	run --separate-stderr "$image_test" resize 2 2 0 2 1 2 1 2 3 4
	assert_failure 1
	assert_output "record bad_size: resize: not a raster of 1 or 3 channels within 65535x65535"
	run --separate-stderr "$image_test" resize 0 2 0 1 1 1 5
	assert_failure 1
	assert_output "record bad_size: resize: 0x2 (0 pixels) is no size to fit in"
	assert_equal "$stderr" ""
}

@test "the scaled decode that fits gives the size of a whole decode and fit, and nearly its pixels" {
	local f
	dq-synth -s 28 -o "$BATS_TEST_TMPDIR/s" -W 1000 -H 750 --refs 1 --good 2 --defects 0 >/dev/null 2>&1
	for f in "$BATS_TEST_TMPDIR"/s/samples/*; do
		run --separate-stderr "$image_test" decode-fit "$f" 256 256
		assert_success
		assert_output --regexp "^256x192 of 1000x750, max diff [0-9]+, mean diff [0-9.]+$"
		awk -v m="$(field "$output" "mean diff")" 'BEGIN { exit !(m <= 1.5) }' || fail "$f: $output"
		assert_equal "$stderr" ""
	done
}

@test "the decode that fits is exact for a PNG, and keeps a pixel budget" {
	local dir=$BATS_TEST_TMPDIR/v
	mkdir "$dir"
	"$image_test" variants "$dir" >/dev/null
	run --separate-stderr "$image_test" decode-fit "$dir/rgba.png" 100 100
	assert_success
	assert_output "100x75 of 320x240, max diff 0, mean diff 0.00"
	assert_equal "$stderr" ""
	run --separate-stderr "$image_test" decode-fit "$dir/baseline.jpg" 4096 4096 5000
	assert_success
	assert_output --regexp "^81x61 of 320x240, "
	assert_equal "$stderr" ""
	run --separate-stderr "$image_test" decode-fit "$dir/lossless.webp" 1000 1000
	assert_success
	assert_output "320x240 of 320x240, max diff 0, mean diff 0.00"
	assert_equal "$stderr" ""
}

@test "the decode that fits reports what is no image, and no size, as record errors" {
	printf 'hello\n' >"$BATS_TEST_TMPDIR/t.txt"
	run --separate-stderr "$image_test" decode-fit "$BATS_TEST_TMPDIR/t.txt" 10 10
	assert_failure 1
	assert_output "record undecodable: not a JPEG, PNG or WebP image"
	assert_equal "$stderr" ""
	run --separate-stderr "$image_test" decode-fit "$BATS_TEST_TMPDIR/t.txt" 0 10
	assert_failure 1
	assert_output "record bad_size: decode: 0x10 (0 pixels) is no size to fit in"
	assert_equal "$stderr" ""
}
